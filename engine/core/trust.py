"""Which repository config files the user trusts: their sha256, kept in the user's data dir.

Why: a repository's ``.agent-tui.toml`` is someone else's input (a clone, a fork, a PR
branch). Its settings that send data or credentials somewhere or run commands (see
:func:`engine.core.config.sensitive_settings`) only apply once the user has read the file and run
``agent-tui trust``, as direnv ``allow``, mise ``trust`` and VS Code's workspace trust do. The
record is the file's path and the sha256 of the exact bytes the user was shown, so any later
change to the file needs trusting again. It lives outside every repository
(``<platformdirs user data dir>/agent-tui/trusted.json``), where no clone can write it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import platformdirs

TRUST_FILE = "trusted.json"


def trust_store_path() -> Path:
    """The file that records trusted config files (in the user's data directory)."""
    return Path(platformdirs.user_data_dir("agent-tui")) / TRUST_FILE


def digest(data: bytes) -> str:
    """The sha256 of a config file's bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


def _load() -> dict[str, str]:
    try:
        data = json.loads(trust_store_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def _save(entries: dict[str, str]) -> None:
    path = trust_store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trusted-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key(path: Path) -> str:
    return str(path.resolve())


def is_trusted(path: Path, data: bytes | None = None) -> bool:
    """The user trusted ``path`` with exactly this content.

    Args:
        path: the repository config file.
        data: its bytes as already read (default: read them now).
    """
    if data is None:
        try:
            data = path.read_bytes()
        except OSError:
            return False
    recorded = _load().get(_key(path))
    return recorded is not None and recorded == digest(data)


def trust(path: Path, data: bytes) -> str:
    """Record that the user trusts ``path`` with content ``data`` (the bytes they were shown).

    Returns:
        The recorded sha256.
    """
    entries = _load()
    entries[_key(path)] = digest(data)
    _save(entries)
    return entries[_key(path)]


def revoke(path: Path) -> bool:
    """Forget ``path``; True when it was trusted before."""
    entries = _load()
    if entries.pop(_key(path), None) is None:
        return False
    _save(entries)
    return True
