"""What the workers tell the screens: one past-tense ``Message`` per thing that happened.

Why messages: every slow step (loading issues or the model, building context, generating,
checking, publishing) runs in a thread worker, and a thread must not touch widgets. It posts
one of these (``post_message`` is thread-safe) and the screen updates itself on its own
event loop. Progress messages replace an older one of the same kind still in the queue
(``can_replace``), so a fast token stream never floods a slow terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual.message import Message

from engine.core.errors import AgentTuiError

if TYPE_CHECKING:
    # types only: the issue list's messages are posted before the engine's models (pydantic,
    # ~0.1 s) are imported, when the first frame is read from the cache (tui.app.for_repo)
    from engine.core.events import GenerationFailed
    from engine.core.models import Issue, IssueComment
    from engine.issues.forge.base import RefreshResult
    from engine.issues.forge.firstframe import CachedIssue


@dataclass
class IssuesLoaded(Message):
    """The issue list was read (from the cache or local files; ``CachedIssue`` rows in the
    first frame, before the engine is loaded)."""

    issues: list[Issue] | list[CachedIssue]
    source: str
    refreshed_at: datetime | None = None


@dataclass
class IssuesRefreshed(Message):
    """A background refresh ended (``result.offline`` when the source was unreachable)."""

    result: RefreshResult
    issues: list[Issue]


@dataclass
class IssueStatesLoaded(Message):
    """Where each issue stands, from the history: issue number -> a short state
    (``proposal``, ``queued``, ``PR #12``...)."""

    states: dict[int, str]


@dataclass
class ProposalRestored(Message):
    """The latest proposal of the issue on screen was brought back from the history
    (``run``: an ``engine.flow.issue_run.IssueRun`` holding its review)."""

    run: Any


@dataclass
class IssueCommentsLoaded(Message):
    """The comments of the issue on screen arrived."""

    number: int
    comments: list[IssueComment]


@dataclass
class ModelLoadStarted(Message):
    """A model started loading (it can take seconds)."""

    name: str


@dataclass
class ModelLoaded(Message):
    """The model is loaded and ready."""

    name: str
    seconds: float


@dataclass
class ContextBuilt(Message):
    """The prompt for the issue was assembled (``context`` is an engine ContextResult)."""

    number: int
    context: Any


@dataclass
class ProposalStreamed(Message):
    """More of the answer arrived: numbers, the partial proposal and the raw text so far."""

    partial: dict[str, Any] | None
    raw: str
    completion_tokens: int
    tokens_per_s: float
    elapsed_s: float
    ttft_s: float | None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    phase: str = "generating"

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ProposalStreamed)


@dataclass
class GenerationPhased(Message):
    """Generation moved to another phase (loading the model, building context, prompt...)."""

    phase: str


@dataclass
class ProposalReady(Message):
    """Generation finished with a valid proposal, already checked (``result``: a
    ``engine.flow.run_events.Review``)."""

    result: Any


@dataclass
class GenerationStopped(Message):
    """Generation ended without a valid proposal (truncated, loop, cancelled, failed)."""

    failure: GenerationFailed


@dataclass
class ChecksCompleted(Message):
    """The checks ran again on the (edited) proposal (``result``: a ``Review``)."""

    result: Any


@dataclass
class PublishStepped(Message):
    """One publish step started or ended (commit, test, push, PR)."""

    step: str
    state: str
    detail: str = ""


@dataclass
class PullRequestOpened(Message):
    """Publishing finished: the pull request exists (``outcome``: the engine's result)."""

    url: str
    outcome: Any = None


@dataclass
class PublishQueued(Message):
    """Publishing could not reach the forge: the job waits in the outbox."""

    message: str
    outcome: Any = None


@dataclass
class HistoryLoaded(Message):
    """The generation history and the outbox were read."""

    entries: list[Any] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)


@dataclass
class ModelsDiscovered(Message):
    """Model servers and GGUF files found on this machine
    (``engine.generate.discover.Discovered``)."""

    found: list[Any]


@dataclass
class ProfilesChecked(Message):
    """The doctor checks of one model profile ended."""

    name: str
    status: str
    detail: str


@dataclass
class WorkerFailed(Message):
    """A worker hit an expected failure; the app shows it in the error modal."""

    error: AgentTuiError
