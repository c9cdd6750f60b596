"""History of every generation and the outbox of publish jobs, in one SQLite file.

Why SQLite in the git directory: it survives crashes (every write is a committed transaction),
needs no server, is shared by the TUI and the CLI, and stays with the clone it describes.
Nothing secret is ever written here: no token, no authenticated URL.

History: one row per generation (issue, model and prompt profiles, prompt hash, the proposal
JSON, the checks' findings, the generation stats) with its outcome: ``generated`` (not yet
decided), ``discarded``, ``published``, ``queued`` (waiting in the outbox) or ``failed``.
``proposal`` is the model's answer as it came; ``edited`` is the proposal as the user left it
(saved after every edit in the Preview, and as published), so nothing is lost when the app
is closed and the history shows what was really published.

Outbox: one row per publish job, a small state machine that only moves forward::

    planned -> committed -> pushed -> pr_opened -> done

Each step is recorded after it has happened and each is idempotent, so a job interrupted at
any point (network down, process killed) is either ``done`` or resumable by
``agent-tui sync`` with its branch intact. ``status`` says whether sync should retry it:
``pending`` (yes), ``failed`` (needs the user: GitHub refused, tests failed...), ``done``,
``cancelled``.

The records themselves (``GenerationRecord``, ``PublishJob``) and their row conversion live in
``engine.publish.records``; this module is the file, its schema and its queries.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from engine.core import gitcmd
from engine.core.errors import AgentTuiError
from engine.core.redact import redact
from engine.publish.records import (
    JOB_STATES,
    GenerationRecord,
    JobStatus,
    Outcome,
    PublishJob,
    check_outcome,
    finding_to_json,
    generation_from_row,
    job_from_row,
    job_row,
)

STORE_FILE = "agent-tui.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    issue_number INTEGER,
    issue_title TEXT NOT NULL DEFAULT '',
    model_profile TEXT NOT NULL DEFAULT '',
    model_ref TEXT NOT NULL DEFAULT '',
    prompt_profile TEXT NOT NULL DEFAULT '',
    prompt_hash TEXT NOT NULL DEFAULT '',
    seed INTEGER,
    proposal TEXT,
    findings TEXT NOT NULL DEFAULT '[]',
    stats TEXT NOT NULL DEFAULT '{}',
    outcome TEXT NOT NULL DEFAULT 'generated',
    detail TEXT NOT NULL DEFAULT '',
    job_id INTEGER,
    pr_url TEXT,
    updated_at TEXT NOT NULL,
    edited TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    generation_id INTEGER,
    issue_number INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    branch TEXT NOT NULL,
    base TEXT NOT NULL,
    base_sha TEXT,
    parent_sha TEXT,
    head_sha TEXT,
    remote TEXT NOT NULL,
    github_repo TEXT,
    api_url TEXT,
    head_owner TEXT,
    proposal TEXT NOT NULL,
    commit_message TEXT NOT NULL,
    pr_title TEXT NOT NULL,
    pr_body TEXT NOT NULL,
    draft INTEGER NOT NULL DEFAULT 1,
    labels TEXT NOT NULL DEFAULT '[]',
    update_existing INTEGER NOT NULL DEFAULT 0,
    pr_number INTEGER,
    pr_url TEXT,
    pr_reused INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    test_command TEXT,
    test_timeout REAL NOT NULL DEFAULT 600,
    tests_in_body INTEGER NOT NULL DEFAULT 0,
    test_summary TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_branch ON jobs (branch);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    key TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id INTEGER NOT NULL,
    issue_number INTEGER NOT NULL,
    position INTEGER NOT NULL,
    issue_title TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    generation_id INTEGER,
    job_id INTEGER,
    pr_url TEXT,
    errors INTEGER NOT NULL DEFAULT 0,
    warnings INTEGER NOT NULL DEFAULT 0,
    tokens_per_s REAL NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (batch_id, issue_number)
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forge_facts (
    repo TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (repo, key)
);
"""

#: Columns added after a table was first created: (table, column, declaration). A database
#: written before them gets them when it is opened.
_ADDED_COLUMNS = (("jobs", "head_repo", "TEXT"), ("generations", "edited", "TEXT"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """The history and outbox database of one repository.

    Args:
        path: the SQLite file (created with its directory).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise AgentTuiError(
                    f"{path} was written by a newer agent-tui (schema {version})",
                    title="History database too new",
                    hint="upgrade agent-tui",
                )
            db.executescript(_SCHEMA)
            for table, column, declaration in _ADDED_COLUMNS:
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def for_repo(cls, repo_dir: Path) -> Store:
        """The store of the repository containing ``repo_dir`` (in its git directory)."""
        return cls(gitcmd.state_dir(repo_dir) / STORE_FILE)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            with db:
                yield db
        finally:
            db.close()

    # -- history --------------------------------------------------------------------------

    def record_generation(
        self,
        *,
        issue_number: int | None,
        issue_title: str = "",
        model_profile: str = "",
        model_ref: str = "",
        prompt_profile: str = "",
        prompt_hash: str = "",
        seed: int | None = None,
        proposal: dict[str, Any] | None = None,
        findings: Sequence[Any] = (),
        stats: dict[str, Any] | None = None,
        outcome: Outcome = "generated",
        detail: str = "",
    ) -> int:
        """Store one generation; returns its id.

        Args:
            issue_number: the issue it answered.
            issue_title: its title (the history stays readable offline).
            model_profile: the model profile name.
            model_ref: the model file's hash or the served model's tag.
            prompt_profile: the prompt profile name.
            prompt_hash: a hash of the exact prompt sent.
            seed: the sampling seed.
            proposal: the proposal as JSON data (None when generation failed).
            findings: the checks' findings (dicts, dataclasses or pydantic models).
            stats: generation statistics (tokens, speed...).
            outcome: one of ``OUTCOMES``.
            detail: why (e.g. the failure's message).

        Raises:
            ValueError: an unknown outcome.
        """
        check_outcome(outcome)
        detail = redact(detail)  # an error's text may echo a credential: never stored
        now = _now()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO generations (created_at, updated_at, issue_number, issue_title, "
                "model_profile, model_ref, prompt_profile, prompt_hash, seed, proposal, "
                "findings, stats, outcome, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    now,
                    now,
                    issue_number,
                    issue_title,
                    model_profile,
                    model_ref,
                    prompt_profile,
                    prompt_hash,
                    seed,
                    json.dumps(proposal) if proposal is not None else None,
                    json.dumps([finding_to_json(f) for f in findings]),
                    json.dumps(stats or {}, default=str),
                    outcome,
                    detail,
                ),
            )
            return int(cur.lastrowid or 0)

    def set_outcome(
        self,
        generation_id: int,
        outcome: Outcome,
        *,
        detail: str = "",
        job_id: int | None = None,
        pr_url: str | None = None,
        only_if: Outcome | None = None,
    ) -> bool:
        """Update a generation's outcome (and link its publish job / pull request).

        Args:
            only_if: change it only while the outcome is still this one (leaving a preview
                discards a proposal, but never one that was published meanwhile).

        Returns:
            Whether a row was changed.

        Raises:
            ValueError: an unknown outcome.
        """
        check_outcome(outcome)
        sql = (
            "UPDATE generations SET outcome = ?, detail = ?, updated_at = ?, "
            "job_id = COALESCE(?, job_id), pr_url = COALESCE(?, pr_url) WHERE id = ?"
        )
        args: list[Any] = [outcome, redact(detail), _now(), job_id, pr_url, generation_id]
        if only_if is not None:
            check_outcome(only_if)
            sql += " AND outcome = ?"
            args.append(only_if)
        with self._connect() as db:
            return db.execute(sql, args).rowcount > 0

    def save_edit(self, generation_id: int, proposal: dict[str, Any]) -> None:
        """Keep the user's version of a generation's proposal (the original stays as it was).

        Args:
            generation_id: the history entry.
            proposal: the proposal as JSON data, as the user left it.
        """
        with self._connect() as db:
            db.execute(
                "UPDATE generations SET edited = ?, updated_at = ? WHERE id = ?",
                (json.dumps(proposal), _now(), generation_id),
            )

    def latest_by_issue(self) -> dict[int, GenerationRecord]:
        """The latest generation holding a proposal, per issue (what reopening brings back)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM generations WHERE id IN (SELECT MAX(id) FROM generations "
                "WHERE proposal IS NOT NULL AND issue_number IS NOT NULL GROUP BY issue_number)"
            ).fetchall()
        return {int(r["issue_number"]): generation_from_row(r) for r in rows}

    def generation(self, generation_id: int) -> GenerationRecord | None:
        """One generation, or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM generations WHERE id = ?", (generation_id,)).fetchone()
        return generation_from_row(row) if row else None

    def generations(
        self, *, limit: int = 50, issue: int | None = None, outcome: str | None = None
    ) -> list[GenerationRecord]:
        """The latest generations first.

        Args:
            limit: at most this many.
            issue: only those answering this issue.
            outcome: only those with this outcome.
        """
        where: list[str] = []
        args: list[Any] = []
        if issue is not None:
            where.append("issue_number = ?")
            args.append(issue)
        if outcome is not None:
            where.append("outcome = ?")
            args.append(outcome)
        sql = "SELECT * FROM generations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._connect() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [generation_from_row(r) for r in rows]

    # -- outbox ---------------------------------------------------------------------------

    def add_job(self, job: PublishJob) -> PublishJob:
        """Store a new job (state ``planned``); returns it with its id."""
        now = _now()
        job.created_at = job.updated_at = now
        job.last_error = redact(job.last_error)
        data = job_row(job)
        data.pop("id")
        cols = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._connect() as db:
            cur = db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(data.values()))
            job.id = int(cur.lastrowid or 0)
        return job

    def update_job(self, job: PublishJob, **changes: Any) -> PublishJob:
        """Apply ``changes`` to ``job`` and store them in one transaction.

        Raises:
            ValueError: an unknown field, state or status.
        """
        names = {f.name for f in fields(PublishJob)}
        for key, value in changes.items():
            if key not in names or key in ("id", "created_at"):
                raise ValueError(f"not a job field: {key}")
            if key == "state" and value not in JOB_STATES:
                raise ValueError(f"unknown job state {value!r}")
            if key == "status" and value not in get_args(JobStatus):
                raise ValueError(f"unknown job status {value!r}")
            if key == "last_error":
                value = redact(str(value))  # GitHub's or git's words may echo a credential
            setattr(job, key, value)
        job.updated_at = _now()
        changes["updated_at"] = job.updated_at
        row = job_row(job)
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._connect() as db:
            db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ?",
                (*(row[k] for k in changes), job.id),
            )
        return job

    def job(self, job_id: int) -> PublishJob | None:
        """One job, or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return job_from_row(row) if row else None

    def jobs(
        self, *, statuses: Sequence[str] | None = None, branch: str | None = None
    ) -> list[PublishJob]:
        """Jobs, oldest first, optionally only those with one of ``statuses`` or ``branch``."""
        where: list[str] = []
        args: list[Any] = []
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args.extend(statuses)
        if branch is not None:
            where.append("branch = ?")
            args.append(branch)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [job_from_row(r) for r in rows]

    def pending_jobs(self, *, include_failed: bool = False) -> list[PublishJob]:
        """Jobs ``agent-tui sync`` should retry, oldest first."""
        return self.jobs(statuses=["pending", "failed"] if include_failed else ["pending"])

    # -- batches ----------------------------------------------------------------------------
    # A batch (``agent-tui batch``) and its items, so a killed batch resumes where it stopped;
    # ``engine.flow.batch`` owns what the states mean.

    def add_batch(
        self, key: str, settings: dict[str, Any], items: Sequence[tuple[int, str]]
    ) -> int:
        """Store a new batch (status ``running``) with one ``pending`` item per issue.

        Args:
            key: what identifies "the same batch" when a command is run again.
            settings: the batch's settings (JSON data).
            items: ``(issue number, title)`` in the order they run.

        Returns:
            The batch id.
        """
        now = _now()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO batches (created_at, updated_at, key, settings) VALUES (?,?,?,?)",
                (now, now, key, json.dumps(settings)),
            )
            batch_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO batch_items (batch_id, issue_number, position, issue_title, "
                "updated_at) VALUES (?,?,?,?,?)",
                [(batch_id, n, i, title, now) for i, (n, title) in enumerate(items)],
            )
        return batch_id

    def add_batch_items(self, batch_id: int, items: Sequence[tuple[int, str]]) -> None:
        """Append ``pending`` items (issues newly matching a label batch); known ones are kept."""
        now = _now()
        with self._connect() as db:
            start = db.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM batch_items WHERE batch_id = ?",
                (batch_id,),
            ).fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO batch_items (batch_id, issue_number, position, "
                "issue_title, updated_at) VALUES (?,?,?,?,?)",
                [(batch_id, n, start + i, title, now) for i, (n, title) in enumerate(items)],
            )

    def batches(self, *, key: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Batches, latest first (optionally only those with ``key``)."""
        sql = "SELECT * FROM batches" + (" WHERE key = ?" if key is not None else "")
        args: tuple[Any, ...] = (key,) if key is not None else ()
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [{**dict(r), "settings": json.loads(r["settings"])} for r in rows]

    def set_batch_status(self, batch_id: int, status: str) -> None:
        """Set a batch's status (``running``, ``done``, ``interrupted``)."""
        with self._connect() as db:
            db.execute(
                "UPDATE batches SET status = ?, updated_at = ? WHERE id = ?",
                (status, _now(), batch_id),
            )

    def batch_items(self, batch_id: int) -> list[dict[str, Any]]:
        """The items of a batch in their order."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM batch_items WHERE batch_id = ? ORDER BY position", (batch_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def update_batch_item(self, batch_id: int, issue_number: int, **changes: Any) -> None:
        """Change columns of one batch item in one transaction.

        Raises:
            ValueError: an unknown column.
        """
        allowed = {
            "state", "generation_id", "job_id", "pr_url", "errors", "warnings",
            "tokens_per_s", "seconds", "attempts", "detail",
        }  # fmt: skip
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not a batch item column: {', '.join(sorted(unknown))}")
        changes["updated_at"] = _now()
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._connect() as db:
            db.execute(
                f"UPDATE batch_items SET {sets} WHERE batch_id = ? AND issue_number = ?",
                (*changes.values(), batch_id, issue_number),
            )

    def jobs_for_generation(self, generation_id: int) -> list[PublishJob]:
        """The publish jobs made from one generation, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE generation_id = ? ORDER BY id", (generation_id,)
            ).fetchall()
        return [job_from_row(r) for r in rows]

    # -- what a forge told us about a repository ------------------------------------------

    def remember_fact(self, repo: str, key: str, value: str, detail: str = "") -> None:
        """Remember something GitHub said about ``repo`` (e.g. it refuses draft PRs).

        Args:
            repo: the repository's identity (``GitHubRepo.key``: API host and owner/name).
            key: what (``drafts_unsupported``).
            value: the value.
            detail: GitHub's words, shown when the fact is used.
        """
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO forge_facts (repo, key, value, detail, updated_at) "
                "VALUES (?,?,?,?,?)",
                (repo, key, value, detail, _now()),
            )

    def fact(self, repo: str, key: str) -> tuple[str, str, str] | None:
        """``(value, detail, updated_at)`` remembered for ``repo``, or None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT value, detail, updated_at FROM forge_facts WHERE repo = ? AND key = ?",
                (repo, key),
            ).fetchone()
        return (str(row[0]), str(row[1]), str(row[2])) if row else None

    # -- model file hashes ----------------------------------------------------------------

    def cached_hash(self, path: Path) -> str | None:
        """A file's sha256 remembered for its current size and mtime, or None."""
        st = path.stat()
        with self._connect() as db:
            row = db.execute(
                "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                (str(path), st.st_size, st.st_mtime_ns),
            ).fetchone()
        return str(row[0]) if row else None

    def remember_hash(self, path: Path, sha256: str) -> None:
        """Remember a file's sha256 for its current size and mtime."""
        st = path.stat()
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256) "
                "VALUES (?,?,?,?)",
                (str(path), st.st_size, st.st_mtime_ns, sha256),
            )
