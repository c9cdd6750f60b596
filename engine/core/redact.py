"""One redaction path: credentials are removed from every text that leaves an error.

Why: a server may echo what it was sent. A GitHub 422 can quote the ``Authorization`` header,
a proxy's 502 page can print the request, a git error can show a URL with its password. That
text is printed by the CLI, shown by the TUI and stored (``jobs.last_error``,
``generations.detail``), so it goes through :func:`redact` first. Three things are removed:

* the current credentials: the value of every GitHub token variable, every variable a model
  profile names in ``api_key_env`` (registered with :func:`register`), every token the app
  resolved, and any environment variable whose name says it holds a secret (``*_TOKEN``,
  ``*_API_KEY``, ``*_SECRET``, ``*PASSWORD*``...), with their Basic-auth encodings;
* known token shapes, whoever's they are (``ghp_...``, ``github_pat_...``, ``sk-...``,
  ``xox?-...``, ``AKIA...``), and the value after ``Authorization:``/``Bearer``/``token``;
* a password in a URL (``https://user:secret@host`` keeps the user).

:class:`engine.core.errors.AgentTuiError` (message and hint), the generation failure events and
the store's error columns all call it, so a new error path is covered without remembering to.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Iterable

MASK = "***"
#: shorter values are not treated as secrets (they would mangle ordinary words)
MIN_SECRET_LEN = 8

#: a variable whose name says it holds a credential (GH_TOKEN, OPENAI_API_KEY, DB_PASSWORD...)
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|PASS|PASSWD|DSN)(?:_|$)|PASSWORD|SECRET",
    re.IGNORECASE,
)
_TOKEN_SHAPES = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
    r"(?:AKIA|ASIA)[A-Z0-9]{16}|glpat-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{20,})"
)
#: the value of an Authorization header, however it is quoted back
_AUTH_HEADER = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|token|basic)?\s*)"
    r"(?!(?:bearer|token|basic)\b)([A-Za-z0-9._~+/=-]{4,})"
)
#: ``Bearer X`` / ``token X`` where X looks like a credential (long, with a digit)
_AUTH_WORD = re.compile(r"(?i)\b(bearer|token)(\s+)(?=[A-Za-z._~+/=-]*\d)([A-Za-z0-9._~+/=-]{16,})")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@")

_lock = threading.Lock()
_registered: set[str] = set()


def register(*values: str | None) -> None:
    """Remember credentials the app uses (a resolved token, an API key) for every redaction."""
    with _lock:
        for value in values:
            if value and len(value.strip()) >= MIN_SECRET_LEN:
                _registered.add(value.strip())


def secret_env_names(environ: dict[str, str] | None = None) -> list[str]:
    """Names of environment variables that hold a credential, by their name."""
    env = os.environ if environ is None else environ
    return [name for name in env if _SECRET_NAME.search(name)]


def current_secrets() -> list[str]:
    """Every credential value known now (environment and registered), longest first."""
    values = {os.environ.get(name, "").strip() for name in secret_env_names()}
    with _lock:
        values |= _registered
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def _forms(secret: str) -> Iterable[str]:
    yield secret
    for raw in (f"x-access-token:{secret}", secret, f":{secret}"):
        encoded = base64.b64encode(raw.encode()).decode()
        yield encoded
        yield encoded.rstrip("=")


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """``text`` without credentials: current secrets, token shapes, auth values, URL passwords.

    Args:
        text: what may be printed, shown or stored.
        extra: more values that must never appear (``None`` entries are skipped).

    Returns:
        The text with each credential replaced by ``***``.
    """
    if not text:
        return text
    text = str(text)
    secrets = [s for s in extra if s and len(s) >= 4]
    for secret in [*secrets, *current_secrets()]:
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, MASK)
    text = _TOKEN_SHAPES.sub(MASK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)
    text = _AUTH_WORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
