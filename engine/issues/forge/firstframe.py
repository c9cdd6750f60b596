"""The issue list of the TUI's first frame, read without pydantic and without the configuration.

Why: the first thing agent-tui shows is the cached issue list. Validating the configuration
and the cached issues needs pydantic, ~0.1 s of imports and model building: a third of the
start of the whole process on the development machine (docs/benchmarks.md, "Process start").
After the engine has chosen the issue source of a repository, the TUI remembers that choice
(``remember``, in the user's state directory) with the fingerprint of the configuration's
inputs (:func:`engine.core.configfiles.fingerprint`) and, when the source follows the git remote,
the remote's URL. At the next start, when they are unchanged, the configuration would choose
the same source again, so its cache is read here as plain rows (``CachedIssue``) and painted
at once; the engine then loads the configuration and the real ``Issue`` models (the same
data) and takes over.

Everything here fails soft: any doubt (no record, another fingerprint, a changed remote, an
unreadable cache or row) returns None and the TUI starts the ordinary way."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import platformdirs

from engine.core import gitcmd
from engine.core.errors import AgentTuiError

RECORD_VERSION = 1


@dataclass(frozen=True)
class CachedIssue:
    """An issue of the cache as the issue list shows and filters it (the fields of
    ``engine.core.models.Issue`` that the list reads, with the same names)."""

    number: int
    title: str
    body: str
    labels: list[str]
    comments: int
    updated_at: datetime | None


@dataclass(frozen=True)
class FirstFrame:
    """What the first frame shows: the remembered source's cached issues."""

    source_name: str
    """The source's short name (``github``), as ``IssueSource.name``."""
    issues: list[CachedIssue]
    refreshed_at: datetime | None
    """When the cache was last refreshed (as ``IssueCache.refreshed_at``)."""
    default_model: str
    """The configuration's ``default_model`` (the model badge)."""


def record_path(repo_dir: Path) -> Path:
    """The record of ``repo_dir``'s last start: in the user's state directory, keyed by the
    directory's path, so finding it runs no git (a ``git rev-parse`` costs a few milliseconds
    of the first frame, far more on a loaded machine)."""
    key = hashlib.sha256(str(repo_dir.resolve()).encode()).hexdigest()[:24]
    return Path(platformdirs.user_state_dir("agent-tui")) / "first-frame" / f"{key}.json"


def remember(
    repo_dir: Path,
    fingerprint: str,
    *,
    remote: str | None,
    source_name: str,
    cache_key: str,
    cache_path: Path,
    default_model: str,
) -> None:
    """Record the issue source the configuration chose for ``repo_dir`` (written only when
    it changed).

    Args:
        repo_dir: the repository directory.
        fingerprint: ``engine.core.configfiles.fingerprint(repo_dir)``, taken before the
            configuration was loaded.
        remote: the git remote the source was derived from (its URL is recorded and must
            be unchanged at the next start); None when the configuration names the
            repository itself (``[github] repo``), so no remote plays a part.
        source_name: the source's short name.
        cache_key: the source's key in the issue cache (``IssueCache.source``).
        cache_path: the issue cache file.
        default_model: the configuration's ``default_model``.
    """
    record = {
        "version": RECORD_VERSION,
        "fingerprint": fingerprint,
        "remote": remote,
        "remote_url": gitcmd.remote_url(repo_dir, remote) if remote is not None else None,
        "source_name": source_name,
        "cache_key": cache_key,
        "cache_path": str(cache_path),
        "default_model": default_model,
    }
    path = record_path(repo_dir)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")) == record:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".first-frame-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_first_frame(repo_dir: Path, fingerprint: str) -> FirstFrame | None:
    """The first frame of ``repo_dir``, or None when the last start's choice may not hold.

    Args:
        repo_dir: the repository directory.
        fingerprint: ``engine.core.configfiles.fingerprint(repo_dir)`` now.
    """
    try:
        record = json.loads(record_path(repo_dir).read_text(encoding="utf-8"))
        if record.get("version") != RECORD_VERSION or record.get("fingerprint") != fingerprint:
            return None
        remote = record["remote"]
        if remote is not None and gitcmd.remote_url(repo_dir, str(remote)) != record["remote_url"]:
            return None
        cache = Path(record["cache_path"])
        if not cache.is_file():
            return None
        with _read_only(cache) as db:
            rows = db.execute(
                "SELECT data FROM issues WHERE source = ? ORDER BY updated_at DESC, number DESC",
                (record["cache_key"],),
            ).fetchall()
            meta = db.execute(
                "SELECT value FROM meta WHERE source = ? AND key = 'refreshed_at'",
                (record["cache_key"],),
            ).fetchone()
        issues = [_row(json.loads(row[0])) for row in rows]
        refreshed = meta[0] if meta and meta[0] else None
        return FirstFrame(
            source_name=str(record["source_name"]),
            issues=issues,
            refreshed_at=datetime.fromisoformat(refreshed) if refreshed else None,
            default_model=str(record["default_model"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, sqlite3.Error):
        return None
    except AgentTuiError:  # git failed (e.g. timed out): start the ordinary way
        return None


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        yield db
    finally:
        db.close()


def _row(data: dict[str, Any]) -> CachedIssue:
    """One cached ``Issue`` JSON object as a row (it was validated when it was cached)."""
    number, title, body = data["number"], data["title"], data.get("body", "")
    labels, comments = data.get("labels", []), data.get("comments", 0)
    updated = data.get("updated_at")
    if not (isinstance(number, int) and isinstance(title, str) and isinstance(body, str)):
        raise TypeError("not an issue")
    if not (isinstance(comments, int) and all(isinstance(x, str) for x in labels)):
        raise TypeError("not an issue")
    return CachedIssue(
        number=number,
        title=title,
        body=body,
        labels=list(labels),
        comments=comments,
        updated_at=datetime.fromisoformat(updated) if updated else None,
    )
