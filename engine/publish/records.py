"""The records the history and the outbox keep: a generation, a publish job, and their rows.

Why apart from ``engine.publish.store``: the store is the SQLite file and its queries; these
are the plain data the rest of the engine and the TUI read (the history screen, the runner's
job), and how each field goes into a row and comes back (JSON for lists and dicts, 0/1 for
flags). The outbox's state machine is described in ``engine.publish.store``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

Outcome = Literal["generated", "discarded", "published", "queued", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
JobState = Literal["planned", "committed", "pushed", "pr_opened", "done"]
JOB_STATES: tuple[str, ...] = get_args(JobState)
JobStatus = Literal["pending", "failed", "done", "cancelled"]


@dataclass
class GenerationRecord:
    """One generation as stored in the history."""

    id: int
    created_at: str
    issue_number: int | None
    issue_title: str
    model_profile: str
    model_ref: str
    prompt_profile: str
    prompt_hash: str
    seed: int | None
    proposal: dict[str, Any] | None
    findings: list[dict[str, Any]]
    stats: dict[str, Any]
    outcome: str
    detail: str
    job_id: int | None
    pr_url: str | None
    updated_at: str
    edited: dict[str, Any] | None = None
    """The proposal as the user edited (and published) it; None: as the model answered."""

    @property
    def current(self) -> dict[str, Any] | None:
        """The latest version of the proposal: the user's edit, else the model's answer."""
        return self.edited if self.edited is not None else self.proposal

    @property
    def state(self) -> str:
        """Where its issue stands, in a word or two: ``proposal`` (ready to review),
        ``queued`` (in the outbox), ``PR #12`` (published), ``failed`` (publishing failed)."""
        if self.outcome == "published":
            match = re.search(r"/pull/(\d+)", self.pr_url or "")
            return f"PR #{match.group(1)}" if match else "published"
        if self.outcome in ("queued", "failed"):
            return self.outcome
        return "proposal"

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class PublishJob:
    """One publish job of the outbox (see the module docstring for its state machine)."""

    issue_number: int
    branch: str
    base: str
    remote: str
    proposal: dict[str, Any]
    commit_message: str
    pr_title: str
    pr_body: str
    draft: bool = True
    labels: list[str] = field(default_factory=list)
    github_repo: str | None = None
    """``owner/name`` the PR is opened on (None: no GitHub known yet)."""
    api_url: str | None = None
    head_owner: str | None = None
    """Owner of the pushed branch (a fork); default: the GitHub repo's owner."""
    head_repo: str | None = None
    """``owner/name`` of the repository the branch is pushed to when it is a fork owned by
    the same owner (GitHub needs ``head_repo`` then); None otherwise."""
    update_existing: bool = False
    """Commit on top of an existing branch instead of creating it."""
    generation_id: int | None = None
    base_sha: str | None = None
    parent_sha: str | None = None
    """The commit the new commit was built on (base tip, or the existing branch's tip)."""
    head_sha: str | None = None
    state: str = "planned"
    status: str = "pending"
    pr_number: int | None = None
    pr_url: str | None = None
    pr_reused: bool = False
    attempts: int = 0
    last_error: str = ""
    test_command: str | None = None
    """Run in the worktree before committing (a failure stops the job)."""
    test_timeout: float = 600.0
    tests_in_body: bool = False
    test_summary: str = ""
    id: int | None = None
    created_at: str = ""
    updated_at: str = ""

    @property
    def done(self) -> bool:
        """The pull request is open and labelled: nothing left to do."""
        return self.status == "done"


_JOB_JSON = {"proposal", "labels"}
_JOB_BOOL = {"draft", "update_existing", "pr_reused", "tests_in_body"}
_GEN_JSON = {"proposal", "findings", "stats", "edited"}


def check_outcome(outcome: str) -> None:
    """Refuse an outcome the history does not know (a typo would hide a generation)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r} (one of {', '.join(OUTCOMES)})")


def finding_to_json(finding: Any) -> dict[str, Any]:
    """A finding (pydantic model, dataclass, dict or any object) as JSON data."""
    if isinstance(finding, dict):
        return {str(k): _jsonable(v) for k, v in finding.items()}
    dump = getattr(finding, "model_dump", None)
    if callable(dump):
        data = dump(mode="json")
        return dict(data) if isinstance(data, dict) else {"value": data}
    if hasattr(finding, "__dataclass_fields__"):
        return {f.name: _jsonable(getattr(finding, f.name)) for f in fields(finding)}
    attrs = ("severity", "rule", "code", "path", "message", "line")
    data = {a: _jsonable(getattr(finding, a)) for a in attrs if hasattr(finding, a)}
    return data or {"message": str(finding)}


def _jsonable(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def job_row(job: PublishJob) -> dict[str, Any]:
    """The job as a ``jobs`` row (lists as JSON, flags as 0/1)."""
    row: dict[str, Any] = {}
    for f in fields(PublishJob):
        value = getattr(job, f.name)
        if f.name in _JOB_JSON:
            value = json.dumps(value)
        elif f.name in _JOB_BOOL:
            value = int(bool(value))
        row[f.name] = value
    return row


def job_from_row(row: sqlite3.Row) -> PublishJob:
    """A job from its ``jobs`` row."""
    data: dict[str, Any] = {}
    for f in fields(PublishJob):
        value = row[f.name]
        if f.name in _JOB_JSON:
            value = json.loads(value)
        elif f.name in _JOB_BOOL:
            value = bool(value)
        data[f.name] = value
    return PublishJob(**data)


def generation_from_row(row: sqlite3.Row) -> GenerationRecord:
    """A generation from its ``generations`` row."""
    data: dict[str, Any] = {}
    for f in fields(GenerationRecord):
        value = row[f.name]
        if f.name in _GEN_JSON and value is not None:
            value = json.loads(value)
        data[f.name] = value
    return GenerationRecord(**data)
