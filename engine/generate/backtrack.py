"""Backtracking: where the answer goes wrong, rewind and take another token there.

Why: a small model fails in two ways no sampler setting fixes. It repeats itself (an import
line of invented names, one list item again and again), and it writes Python that cannot
parse (``HTTP_ PUT``, a body left unindented). The loop detector only *stops* such an answer;
DRY only pushes the text into ever-varied nonsense (docs/benchmarks.md). Here the decoding
loop notices the mistake a few tokens after it is made, removes the tokens from the first
bad one on (KV cache, grammar, guards, the text already streamed) and forbids, at that
position only, the token that started it. Greedy decoding then takes its next-best choice, so
the answer stays reproducible, and the search is bounded (``limit`` rewinds per answer); past
the bound the loop detector judges the answer as before.

Three rules decide a rewind, all on the answer as written so far:

* **Repetition** — the tail of the answer is one unit written back to back (the loop
  detector's ``repeated_tail`` with a lower bar: three copies of a unit of up to 16
  characters, two of a longer one, such as a line or a list item written twice). The first
  copy stays; the rewind goes to the start of the second.
* **A Python line that cannot parse** — when a ``.py`` file's content gains a line, its text
  so far goes through ``codeop`` (the interactive interpreter's own "complete, incomplete or
  invalid" test). Invalid means no continuation can make it parse, so the rewind goes to the
  token the error points at, within the line just written.
* **A Python line that parses but is a mistake** — ``self.url = self.url``, a second
  ``class Health`` in the same scope (``engine.generate.pylines``): back to where the line
  goes wrong, so the model writes something else there instead of building on it.
"""

from __future__ import annotations

import codeop
import json
import re
import warnings
from dataclasses import dataclass, field

from engine.core import pysource
from engine.generate import pylines
from engine.generate.stream import LoopPolicy, repeated_tail

#: The bar for a rewind: lower than the loop detector's (``LoopPolicy()``), so that a repeat
#: is undone long before it would stop the answer.
EARLY_REPEAT = LoopPolicy(
    max_period=16,
    min_repeats=3,
    min_chars=24,
    min_chars_short=100,
    max_long_period=1024,
    min_long_repeats=2,
    window=4096,
)

SAME_LINE_SHAPE = LoopPolicy(
    max_period=48, min_repeats=6, min_chars=12, min_chars_short=12, max_long_period=48
)
"""One shape six times in one line (``, HTTP_303`` as ``, a_0``): seven items of one kind in
a single line is a runaway list; the rewind keeps five of them and bans what starts the
next."""

LINES_SHAPE = LoopPolicy(
    max_period=64,
    min_repeats=10,
    min_chars=40,
    min_chars_short=40,
    max_long_period=512,
    min_long_repeats=10,
)
"""One line shape ten times in a row (``    a: a`` for ever-longer field names)."""

MIN_COPIED_FILE = 32
"""Bytes of content from which a file equal to an earlier one is a copy, not two empty
``__init__.py`` files or the like."""

DEFAULT_LIMIT = 64
"""Rewinds per answer. Each one costs the tokens it removes; past this the answer goes on
unaided and the loop detector and checks judge it."""


@dataclass(frozen=True)
class Rewind:
    """Keep the answer's first ``keep`` tokens and forbid ``ban`` as the next one."""

    keep: int
    ban: int
    reason: str
    """``repeat``, ``syntax`` or ``mistake`` (code that parses but nobody means:
    ``engine.generate.pylines``)."""


@dataclass
class _Content:
    """The ``content`` string being written: where it starts in the answer, and its file."""

    path: str
    start: int
    """Byte offset of the content's first byte in the answer."""
    checked_lines: int = 0


def _char_offsets(raw: bytes) -> list[int]:
    """For a JSON string's raw bytes (no quotes), the byte offset of each decoded character."""
    offsets: list[int] = []
    i, n = 0, len(raw)
    while i < n:
        offsets.append(i)
        byte = raw[i]
        if byte == 0x5C:  # an escape: \X or \uXXXX (a surrogate pair is two characters' worth)
            i += 6 if i + 1 < n and raw[i + 1] == 0x75 else 2
        elif byte < 0x80:
            i += 1
        elif byte >= 0xF0:
            i += 4
        elif byte >= 0xE0:
            i += 3
        else:
            i += 2
    return offsets


@dataclass
class Backtracker:
    """Follows the answer token by token and says where to rewind, if anywhere."""

    limit: int = DEFAULT_LIMIT
    repeats: bool = True
    syntax: bool = True
    data: bytearray = field(default_factory=bytearray)
    starts: list[int] = field(default_factory=list)
    """Byte offset of each answer token in ``data``."""
    sampled: list[bool] = field(default_factory=list)
    """Whether each token was sampled (a rewind bans only sampled tokens, never forced ones)."""
    tokens: list[int] = field(default_factory=list)
    bans: dict[int, set[int]] = field(default_factory=dict)
    contents: list[bytes] = field(default_factory=list)
    """The content (raw JSON text) of every file closed so far, in order."""
    rewinds: int = 0
    _content: _Content | None = None
    _closed: tuple[_Content, int] | None = None
    """A content string that closed in the last step, and the offset of its closing quote."""
    _scan: int = 0
    """Bytes of ``data`` already scanned for string boundaries."""
    _last_step: int = 1
    """Bytes the last step added."""
    _in_string: bool = False
    _string_at: int = 0
    """Where the string open now starts (just after its quote)."""
    _escaped: bool = False

    # -- following the answer ------------------------------------------------------------

    def feed(self, tokens: list[int], pieces: list[bytes], first_sampled: bool = True) -> None:
        """Record one step: its tokens (the first sampled unless ``first_sampled`` is False)."""
        self._last_step = max(sum(len(p) for p in pieces), 1)
        for i, (tok, piece) in enumerate(zip(tokens, pieces, strict=True)):
            self.starts.append(len(self.data))
            self.tokens.append(tok)
            self.sampled.append(i == 0 and first_sampled)
            self.data += piece

    def banned(self) -> set[int]:
        """The tokens forbidden at the next position."""
        return self.bans.get(len(self.tokens), set())

    def _follow(self) -> None:
        """Track which string is open (the JSON is compact: a value follows ``"key":``)."""
        while self._scan < len(self.data):
            self._scan_one()

    def _scan_one(self) -> None:
        data = self.data
        at = self._scan
        byte = data[at]
        self._scan += 1
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif byte == 0x5C:
                self._escaped = True
            elif byte == 0x22:
                self._in_string = False
                if self._content is not None:
                    self._closed = (self._content, at)
                    self.contents.append(bytes(data[self._content.start : at]))
                    self._content = None
        elif byte == 0x22:
            self._in_string = True
            self._string_at = at + 1
            if data[: at + 1].endswith(b'"content":"'):
                self._content = _Content(self._last_path(at), at + 1)

    def _last_path(self, before: int) -> str:
        key = b'"path":"'
        at = self.data.rfind(key, 0, before)
        if at < 0:
            return ""
        start = at + len(key)
        end = self.data.find(b'"', start)
        return self.data[start:end].decode("utf-8", errors="replace") if end > 0 else ""

    # -- deciding --------------------------------------------------------------------------

    def check(self) -> Rewind | None:
        """Where to rewind after the last step, or None."""
        self._closed = None
        self._follow()
        if self.rewinds >= self.limit or not self.tokens:
            return None
        if self.repeats and self._closed is not None:
            cut = self._copied_file_cut()
            if cut is not None:
                return self._rewind_at(cut, "repeat")
        if self.syntax:
            found = self._syntax_cut()
            if found is not None:
                return self._rewind_at(*found)
        if self.repeats and self._in_string:
            cut = self._repeat_cut()
            if cut is not None:
                return self._rewind_at(cut, "repeat")
        return None

    def _copied_file_cut(self) -> int | None:
        """A file whose whole content is an earlier file's (the same module under ten paths):
        back to the choice that started this file, so the answer ends instead."""
        assert self._closed is not None
        content, _quote = self._closed
        *earlier, body = self.contents  # ``_follow`` recorded it as it closed
        if len(body) < MIN_COPIED_FILE or body not in earlier:
            return None
        entry = self.data.rfind(b'{"path":"', 0, content.start)
        return entry - 1 if entry > 0 else None  # the ',' that opened this entry

    def _repeat_cut(self) -> int | None:
        tail_start = max(0, len(self.data) - EARLY_REPEAT.window)
        tail = self.data[tail_start:].decode("latin-1")  # one character per byte
        found = repeated_tail(tail, EARLY_REPEAT)
        if found is not None:
            unit, reps = found
            return len(self.data) - (reps - 1) * len(unit)
        return self._pattern_cut(tail_start)

    def _pattern_cut(self, tail_start: int) -> int | None:
        """Where the answer repeats one *shape* (``, HTTP_303, HTTP_403, ...``, a class of
        ever-longer field names): names and numbers vary, so the exact rule misses it."""
        data = self.data
        string_start = max(self._string_at, tail_start)
        skeleton, where = _skeleton(bytes(data[string_start:]))
        line = skeleton.rfind("\n")
        for text, policy in ((skeleton[line + 1 :], SAME_LINE_SHAPE), (skeleton, LINES_SHAPE)):
            found = repeated_tail(text, policy)
            if found is not None and found[0].strip("a0 \t\n"):  # not prose: words alone
                unit, _reps = found
                return string_start + where[len(skeleton) - len(unit)]
        return None

    def _syntax_cut(self) -> tuple[int, str] | None:
        """Where a Python file went wrong, and why (``syntax`` or ``mistake``): in the line
        just ended, or at its closing quote."""
        if self._closed is not None:
            closed, quote = self._closed
            if not pysource.is_python_path(closed.path):
                return None
            raw = bytes(self.data[closed.start : quote])
            return self._judge(closed, raw, final=True, quote=quote)
        content = self._content
        if content is None or not pysource.is_python_path(content.path):
            return None
        raw = bytes(self.data[content.start :])
        ends = _line_ends(raw)
        if len(ends) > content.checked_lines:
            content.checked_lines = len(ends)
            return self._judge(content, raw[: ends[-1]], final=False, quote=-1)
        cut = self._partial_line_cut(content, raw, ends[-1] if ends else 0)
        return None if cut is None else (cut, "syntax")

    def _partial_line_cut(self, content: _Content, raw: bytes, line_start: int) -> int | None:
        """A line still being written that is already wrong (``HTTP_404 HTTP_405``, ``HTTP_
        PUT``, ``401_ERROR``): "invalid ..." before the line's last word, which no continuation
        fixes.
        Errors at its end, or of an unfinished string, bracket or clause, are not judged."""
        partial = raw[line_start:]
        if not partial.strip() or _escaped(partial, len(partial)):
            return None
        if not partial[-self._last_step :].strip(_WORD_AND_OPERATOR_BYTES):
            return None  # only a word or operator grew: what is judged did not change
        try:
            text = json.loads(b'"' + raw + b'"')
        except ValueError:
            return None
        error, _incomplete = _python_verdict(text)
        if error is None or not (error.msg or "").startswith("invalid"):
            return None  # "invalid syntax", "invalid decimal literal", "invalid character"...
        index = _last_line_error(text, error)
        if index is None:
            return None
        line_at = text.rfind("\n") + 1
        line = text[line_at:]
        word = len(line) - len(line.rstrip(_WORD_CHARS + _OPERATOR_CHARS))
        if index - line_at >= len(line) - word:
            return None  # at the last word or past the end: more text may still fix it
        offsets = _char_offsets(raw)
        return content.start + offsets[index] if index < len(offsets) else None

    def _judge(
        self, content: _Content, raw: bytes, *, final: bool, quote: int
    ) -> tuple[int, str] | None:
        """The answer offset to rewind to, and why, when ``raw`` (a file's JSON text) cannot be
        Python, or its last line is a mistake (``pylines``)."""
        try:
            text = json.loads(b'"' + raw + b'"')
        except ValueError:
            return None
        error, incomplete = _python_verdict(text)
        if error is None:
            if final and incomplete:
                return quote, "syntax"
            cut = self._mistake_cut(content, raw, text)
            return None if cut is None else (cut, "mistake")
        if final and _UNFINISHED.search(error.msg or ""):
            return quote, "syntax"  # the file ends too early: write on instead of closing it
        ends = _line_ends(raw)
        if final and raw and not raw.endswith(b"\\n"):
            ends.append(len(raw))
        at = ends[-2] if len(ends) >= 2 else 0  # the last line's start
        index = _last_line_error(text, error)
        if index is not None:
            offsets = _char_offsets(raw)
            if 0 <= index < len(offsets):
                at = max(at, offsets[index])
        return content.start + at, "syntax"

    def _mistake_cut(self, content: _Content, raw: bytes, text: str) -> int | None:
        """Where the last line of code that parses is still a mistake (``pylines``)."""
        found = pylines.mistake(text)
        if found is None:
            return None
        offsets = _char_offsets(raw)
        index = found[0]
        return content.start + offsets[index] if index < len(offsets) else None

    def _rewind_at(self, cut: int, reason: str) -> Rewind | None:
        """The rewind that removes the token holding byte ``cut`` and everything after it."""
        starts = self.starts
        index = next((i for i in range(len(starts) - 1, -1, -1) if starts[i] <= cut), 0)
        while index > 0 and not self.sampled[index]:
            index -= 1
        if not self.sampled[index]:
            return None
        ban = self.tokens[index]
        self.rewinds += 1
        self.truncate(index)
        self.bans.setdefault(index, set()).add(ban)
        return Rewind(index, ban, reason)

    def truncate(self, keep: int) -> None:
        """Forget every token after the first ``keep`` (and the bans past them)."""
        cut = self.starts[keep] if keep < len(self.starts) else len(self.data)
        del self.data[cut:], self.starts[keep:], self.tokens[keep:], self.sampled[keep:]
        self.bans = {i: b for i, b in self.bans.items() if i <= keep}
        self._scan, self._in_string, self._escaped = 0, False, False
        self._content = None
        self.contents = []
        self._follow()  # the files closed before ``keep`` are recorded again
        self._closed = None


_WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

_OPERATOR_CHARS = "=<>!*/%+-&|^~@.:"
"""A line ending in these may be in the middle of an operator (``=`` of ``==``): its last
word and operator are not judged yet."""

_WORD_AND_OPERATOR_BYTES = (_WORD_CHARS + _OPERATOR_CHARS).encode()

_UNFINISHED = re.compile(r"never closed|unexpected EOF|unterminated|expected an indented block")
"""Errors of a file closed too early (an open bracket, string or block): only more text helps."""


def _escaped(data: bytes, at: int) -> bool:
    """Whether the byte at ``at`` follows an odd run of backslashes (it is escaped)."""
    run, i = 0, at - 1
    while i >= 0 and data[i] == 0x5C:
        run, i = run + 1, i - 1
    return run % 2 == 1


def _skeleton(raw: bytes) -> tuple[str, list[int]]:
    """A JSON string's raw bytes as their shape: a run of letters or ``_`` becomes ``a``, a run
    of digits ``0``, the escape ``\\n`` a newline; with the byte offset each character comes
    from (one more entry: the end)."""
    out: list[str] = []
    where: list[int] = []
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        where.append(i)
        if byte == 0x5C:
            out.append("\n" if i + 1 < n and raw[i + 1] == 0x6E else "\\")
            i += 2
            continue
        if byte == 0x5F or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A or byte >= 0x80:
            while i < n and (
                raw[i] == 0x5F or 0x41 <= raw[i] <= 0x5A or 0x61 <= raw[i] <= 0x7A or raw[i] >= 0x80
            ):
                i += 1
            out.append("a")
            continue
        if 0x30 <= byte <= 0x39:
            while i < n and 0x30 <= raw[i] <= 0x39:
                i += 1
            out.append("0")
            continue
        out.append(chr(byte))
        i += 1
    where.append(n)
    return "".join(out), where


def _last_line_error(text: str, error: SyntaxError) -> int | None:
    """The character index in ``text`` that ``error`` points at, when that is on the text's
    last line (a final newline ends the last line, it does not start another)."""
    body = text[:-1] if text.endswith("\n") else text
    if error.lineno != body.count("\n") + 1 or not error.offset:
        return None
    return body.rfind("\n") + error.offset  # the line's start plus the 1-based column, less 1


_ESCAPE = re.compile(rb"\\.", re.DOTALL)


def _line_ends(raw: bytes) -> list[int]:
    """Offsets just past each ``\\n`` escape in a JSON string's raw bytes."""
    return [m.end() for m in _ESCAPE.finditer(raw) if m[0] == b"\\n"]


def _python_verdict(text: str) -> tuple[SyntaxError | None, bool]:
    """``(error, incomplete)``: the error no continuation of ``text`` can fix, or whether more
    text is needed for it to be a whole module."""
    # a text shorter than the bound cannot nest that deep (each level takes a character)
    if len(text) > pysource.MAX_DEPTH and pysource.depth_bound(text) > pysource.MAX_DEPTH:
        return None, False  # too deep to compile safely: the checks will judge it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences and the like
        try:
            code = codeop.compile_command(text, "<proposal>", "exec")
        except SyntaxError as exc:
            return exc, False
        except (ValueError, RecursionError, MemoryError, OverflowError):
            return None, False
    return None, code is None


__all__ = ["DEFAULT_LIMIT", "EARLY_REPEAT", "Backtracker", "Rewind"]
