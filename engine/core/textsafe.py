"""One sanitiser for untrusted text on a terminal: control characters are shown, never obeyed.

Why: issue titles and bodies (anyone can open a GitHub issue), file paths, the model's answer,
server error messages and a repository's config are someone else's input. Printed raw, an
``ESC [ 2 J`` clears the screen, an OSC 8 forges a link, an OSC 52 writes the clipboard, and a
bidi override makes ``evil.py`` read as something else (Trojan Source). Every CLI line that
carries such text goes through :func:`safe` (one line) or :func:`safe_block` (newlines and
tabs kept): C0 controls (except newline and tab), DEL, C1 controls, and the Unicode bidi
controls become visible escapes such as ``\\x1b`` or ``\\u202e``, so the user sees that they
were there. A lone surrogate (a path Python decoded with ``surrogateescape``) is shown as
``\\udcXX`` instead of raising ``UnicodeEncodeError`` on output.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any

#: bidi embedding/override/isolate controls and marks (Trojan Source, CVE-2021-42574)
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

_UNSAFE_BLOCK = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS)) + "\ud800-\udfff\u2028\u2029]"
)
_UNSAFE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS)) + "\ud800-\udfff\u2028\u2029]"
)


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def safe(text: object) -> str:
    """``text`` on one terminal line: every control character (newline and tab too) escaped.

    Args:
        text: untrusted text (anything else is ``str()``-ed first).
    """
    return _UNSAFE_LINE.sub(_escape, str(text))


def safe_block(text: object) -> str:
    """``text`` with its newlines and tabs kept and every other control character escaped."""
    return _UNSAFE_BLOCK.sub(_escape, str(text))


#: the one control sequence the CLI itself writes: return to the line start and clear it
#: (progress lines); anything else in a write is escaped
CLEAR_LINE = "\r\x1b[2K"


def _escape_u(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def terminal_safe(text: str) -> str:
    """What a CLI stream may write: newlines and tabs, and the app's own :data:`CLEAR_LINE`.

    Every other control character becomes ``\\uXXXX``: readable on a terminal, and the same
    escape JSON uses, so ``--json`` output written with ``ensure_ascii=False`` stays valid
    JSON that decodes to the original string.
    """
    parts = text.split(CLEAR_LINE) if CLEAR_LINE in text else [text]
    return CLEAR_LINE.join(_UNSAFE_BLOCK.sub(_escape_u, part) for part in parts)


class SafeStream:
    """A text stream that escapes control characters before they reach the terminal.

    Why a stream: every command prints untrusted text somewhere (issue titles, GitHub's and
    git's messages, paths, labels, the model's answer); wrapping ``sys.stdout`` and
    ``sys.stderr`` once while a command runs covers every print, including ones added later.
    JSON output is unaffected (``json.dumps`` already escapes control characters).
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(terminal_safe(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def safe_std_streams() -> Iterator[None]:
    """``sys.stdout``/``sys.stderr`` escape control characters inside the ``with`` block."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(out), SafeStream(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def control_chars(text: str, *, allow_newlines: bool = True) -> list[str]:
    """The control characters ``text`` holds, escaped for a message (empty: none).

    Args:
        text: the text to inspect.
        allow_newlines: newline and tab are fine (a body); False for one-line fields.
    """
    pattern = _UNSAFE_BLOCK if allow_newlines else _UNSAFE_LINE
    seen: list[str] = []
    for match in pattern.finditer(text):
        shown = _escape(match)
        if shown not in seen:
            seen.append(shown)
    return seen


def has_controls(text: str, *, allow_newlines: bool = True) -> bool:
    """``text`` holds a control character (newline and tab allowed unless told otherwise)."""
    pattern = _UNSAFE_BLOCK if allow_newlines else _UNSAFE_LINE
    return pattern.search(text) is not None
