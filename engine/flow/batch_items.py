"""What a batch is made of: its options, its items and their states, its progress and summary.

Why apart from ``engine.flow.batch``: the CLI and the bench build ``BatchOptions`` and read
``BatchSummary`` and ``BatchProgress`` without the runner's machinery; the item states and
which of them end an item are listed once here (the store keeps them, ``engine.flow.batch``
moves items between them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

from engine.core.errors import ConfigError

PublishMode = Literal["none", "draft"]
PUBLISH_MODES: tuple[str, ...] = ("none", "draft")


class ItemState(StrEnum):
    """How far one issue of a batch got (the module docstring draws the transitions).

    A ``StrEnum``: the history database, ``--json`` and the summary table hold the plain
    value."""

    PENDING = "pending"
    GENERATING = "generating"
    GENERATED = "generated"
    FAILED = "failed"
    BLOCKED = "blocked"
    """Generated, but the checks or the publish plan found errors."""
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    QUEUED = "queued"
    """Pushed; the pull request waits in the outbox."""
    PUBLISH_FAILED = "publish_failed"


#: item states after which the batch has nothing left to do for the issue
DONE_GENERATE_ONLY = frozenset({ItemState.GENERATED, ItemState.BLOCKED, ItemState.FAILED})
DONE_PUBLISH = frozenset(
    {
        ItemState.PUBLISHED,
        ItemState.BLOCKED,
        ItemState.FAILED,
        ItemState.QUEUED,
        ItemState.PUBLISH_FAILED,
    }
)
#: outcomes that count as the batch's success
SUCCESS = frozenset({ItemState.GENERATED, ItemState.PUBLISHED})


@dataclass
class BatchOptions:
    """What a batch runs on and how.

    ``issues`` or ``labels`` selects the issues (exactly one of them).
    """

    issues: list[int] | None = None
    """These issue numbers, in this order."""
    labels: list[str] = field(default_factory=list)
    """Every open issue having all these labels, by number."""
    publish: PublishMode = "none"
    """``draft``: open a draft pull request for each proposal without error findings."""
    concurrency: int | None = None
    """Generations at once (server backends); None: the profile's ``concurrency``."""
    model: str | None = None
    """Model profile (default: ``default_model``)."""
    prompt: str | None = None
    """Prompt profile (default: ``default_prompt``)."""
    fresh: bool = False
    """Start a new batch even when the same one was interrupted."""
    retry_failed: bool = False
    """When resuming, generate again the issues whose generation failed."""

    def selector(self) -> dict[str, Any]:
        """The selection as JSON data (part of the batch's identity).

        Raises:
            ConfigError: neither or both of ``issues`` and ``labels``.
        """
        if bool(self.issues) == bool(self.labels):
            raise ConfigError(
                "choose the issues: --issues 3,5,8 or --label L (not both)",
                hint="`agent-tui issues --label L` lists what a label selects",
            )
        if self.issues:
            return {"issues": list(self.issues)}
        return {"labels": sorted(set(self.labels))}


@dataclass
class BatchItem:
    """One issue of a batch and how far it got (a row of ``batch_items``)."""

    issue_number: int
    issue_title: str = ""
    position: int = 0
    state: ItemState = ItemState.PENDING
    generation_id: int | None = None
    job_id: int | None = None
    pr_url: str | None = None
    errors: int = 0
    warnings: int = 0
    tokens_per_s: float = 0.0
    seconds: float = 0.0
    attempts: int = 0
    detail: str = ""
    done_before: bool = False
    """Finished by an earlier run of this batch (not redone by this one)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BatchItem:
        names = {f.name for f in fields(cls)}
        item = cls(**{k: v for k, v in row.items() if k in names})
        item.state = ItemState(item.state)
        return item

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class BatchProgress:
    """What the batch is doing, for a progress display (called from worker threads)."""

    kind: Literal["started", "tokens", "finished", "note"]
    issue: int | None
    item: BatchItem | None = None
    tokens: int = 0
    tokens_per_s: float = 0.0
    files: int = 0
    message: str = ""


ProgressCallback = Callable[[BatchProgress], None]


@dataclass
class BatchSummary:
    """How a batch run ended."""

    batch_id: int
    resumed: bool
    concurrency: int
    publish: str
    model: str
    prompt: str
    items: list[BatchItem]
    seconds: float
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Items per state."""
        out: dict[str, int] = {}
        for item in self.items:
            out[item.state] = out.get(item.state, 0) + 1
        return out

    @property
    def complete(self) -> bool:
        """Nothing is left to do for any item."""
        done = DONE_PUBLISH if self.publish == "draft" else DONE_GENERATE_ONLY
        return all(i.state in done for i in self.items)

    @property
    def ok(self) -> bool:
        """Every item reached its goal without an error finding (generated, or published
        with ``--publish draft``)."""
        goal = ItemState.PUBLISHED if self.publish == "draft" else ItemState.GENERATED
        return self.complete and all(i.state == goal and not i.errors for i in self.items)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (``agent-tui batch --json``)."""
        return {
            "batch": self.batch_id,
            "resumed": self.resumed,
            "interrupted": self.interrupted,
            "complete": self.complete,
            "ok": self.ok,
            "concurrency": self.concurrency,
            "publish": self.publish,
            "model_profile": self.model,
            "prompt_profile": self.prompt,
            "seconds": round(self.seconds, 3),
            "counts": self.counts,
            "notes": self.notes,
            "items": [i.to_json() for i in self.items],
        }

    def table(self) -> str:
        """The summary table: issue, outcome, findings, tokens/s, time, PR or detail."""
        header = f"{'issue':<7} {'outcome':<15} {'findings':<9} {'tok/s':>6} {'time':>7}  detail"
        lines = [header, "-" * len(header)]
        for i in self.items:
            findings = f"{i.errors}E {i.warnings}W" if i.generation_id else "-"
            rate = f"{i.tokens_per_s:.1f}" if i.tokens_per_s else "-"
            took = f"{i.seconds:.1f}s" if i.seconds else "-"
            outcome = i.state + (" (earlier)" if i.done_before else "")
            detail = i.pr_url or i.detail
            lines.append(
                f"#{i.issue_number:<6} {outcome:<15} {findings:<9} {rate:>6} {took:>7}  {detail}"
            )
        counts = ", ".join(f"{n} {state}" for state, n in sorted(self.counts.items()))
        verb = "interrupted" if self.interrupted else "finished"
        lines.append(
            f"batch #{self.batch_id} {verb} in {self.seconds:.1f}s "
            f"(concurrency {self.concurrency}): {counts}"
        )
        return "\n".join(lines)


__all__ = [
    "DONE_GENERATE_ONLY",
    "DONE_PUBLISH",
    "PUBLISH_MODES",
    "SUCCESS",
    "BatchItem",
    "BatchOptions",
    "BatchProgress",
    "BatchSummary",
    "ProgressCallback",
    "ItemState",
    "PublishMode",
]
