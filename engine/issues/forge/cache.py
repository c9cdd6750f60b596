"""The issue cache: a small SQLite file in the repository's git directory.

Why: the issue list must appear instantly at startup and keep working offline. Issues are
stored as the engine's own ``Issue`` JSON, keyed by source (``host/owner/repo``), with the
newest ``updated_at`` GitHub reported (the ``since`` of the next incremental refresh, in
GitHub's clock, so a skewed local clock loses nothing) and the time of the last successful
refresh (shown when serving offline).

The cache is disposable: a file that is not a readable database is replaced, never an error.
Each call opens its own connection, so TUI worker threads and the CLI can share it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from engine.core.models import Issue, IssueComment

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    source TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
    PRIMARY KEY (source, key));
CREATE TABLE IF NOT EXISTS issues (
    source TEXT NOT NULL, number INTEGER NOT NULL, updated_at TEXT, data TEXT NOT NULL,
    PRIMARY KEY (source, number));
CREATE TABLE IF NOT EXISTS comments (
    source TEXT NOT NULL, number INTEGER NOT NULL, fetched_at TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (source, number));
"""


class IssueCache:
    """Cached issues of one source in a SQLite file.

    Args:
        path: the database file (created with its directory).
        source: the source's identity, e.g. ``api.github.com/owner/repo``.
    """

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        path.parent.mkdir(parents=True, exist_ok=True)
        self._init()

    def _init(self) -> None:
        try:
            with self._connect() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(f"unknown cache schema {version}")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            log.warning("issue cache %s unusable (%s): starting a new one", self.path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            with self._connect() as db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            with db:
                yield db
        finally:
            db.close()

    # -- issues ---------------------------------------------------------------------------

    def issues(self) -> list[Issue]:
        """Every cached issue, newest update first (then highest number)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT data FROM issues WHERE source = ? ORDER BY updated_at DESC, number DESC",
                (self.source,),
            ).fetchall()
        return [Issue.model_validate_json(row[0]) for row in rows]

    def get(self, number: int) -> Issue | None:
        """Cached issue ``number``, or None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT data FROM issues WHERE source = ? AND number = ?", (self.source, number)
            ).fetchone()
        return Issue.model_validate_json(row[0]) if row else None

    def count(self) -> int:
        """How many issues are cached."""
        with self._connect() as db:
            row = db.execute("SELECT COUNT(*) FROM issues WHERE source = ?", (self.source,))
            return int(row.fetchone()[0])

    def upsert(self, issues: Sequence[Issue]) -> None:
        """Insert or replace ``issues`` (no change to the refresh bookkeeping)."""
        with self._connect() as db:
            self._upsert(db, issues)

    def _upsert(self, db: sqlite3.Connection, issues: Sequence[Issue]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO issues (source, number, updated_at, data) VALUES (?,?,?,?)",
            [
                (
                    self.source,
                    i.number,
                    i.updated_at.astimezone(UTC).isoformat() if i.updated_at else "",
                    i.model_dump_json(),
                )
                for i in issues
            ],
        )

    def apply(
        self,
        upserts: Sequence[Issue],
        removed: Sequence[int],
        *,
        since: str | None,
        refreshed_at: datetime,
        replace: bool = False,
    ) -> None:
        """Record one refresh atomically.

        Args:
            upserts: open issues that were added or changed.
            removed: numbers of issues that were closed (dropped from the cache).
            since: the newest ``updated_at`` GitHub reported (next refresh asks from there).
            refreshed_at: when the refresh started.
            replace: the refresh listed every open issue: drop everything else.
        """
        with self._connect() as db:
            if replace:
                db.execute("DELETE FROM issues WHERE source = ?", (self.source,))
            self._upsert(db, upserts)
            db.executemany(
                "DELETE FROM issues WHERE source = ? AND number = ?",
                [(self.source, n) for n in removed],
            )
            if since:
                self._set(db, "since", since)
            self._set(db, "refreshed_at", refreshed_at.astimezone(UTC).isoformat())

    # -- bookkeeping ----------------------------------------------------------------------

    def _set(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO meta (source, key, value) VALUES (?,?,?)",
            (self.source, key, value),
        )

    def _get(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT value FROM meta WHERE source = ? AND key = ?", (self.source, key)
            ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def since(self) -> str | None:
        """The ``since`` of the next incremental refresh (None: never refreshed)."""
        return self._get("since")

    def refreshed_at(self) -> datetime | None:
        """When the last successful refresh started (None: never)."""
        value = self._get("refreshed_at")
        return datetime.fromisoformat(value) if value else None

    # -- comments -------------------------------------------------------------------------

    def put_comments(self, number: int, comments: Sequence[IssueComment]) -> None:
        """Cache issue ``number``'s comments."""
        data = json.dumps([c.model_dump(mode="json") for c in comments])
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO comments (source, number, fetched_at, data) "
                "VALUES (?,?,?,?)",
                (self.source, number, datetime.now(UTC).isoformat(), data),
            )

    def comments(self, number: int) -> list[IssueComment] | None:
        """Cached comments of issue ``number`` (None: never fetched)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT data FROM comments WHERE source = ? AND number = ?", (self.source, number)
            ).fetchone()
        if not row:
            return None
        return [IssueComment.model_validate(c) for c in json.loads(row[0])]
