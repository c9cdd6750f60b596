"""What one generation emits, whatever the backend: typed events, the last one final.

Why one vocabulary: the TUI's Generating screen, the CLI's progress line and the batch runner
all consume the same stream, so a new backend only has to produce these. Every stream ends
with exactly one ``Finished`` or one ``GenerationFailed`` (a subclass naming what went wrong);
a failure keeps the partial proposal so nothing the model wrote is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.core.models import ChangeProposal
from engine.core.redact import redact


@dataclass(frozen=True)
class GenerationStats:
    """Numbers about one generation."""

    backend: str = ""
    model: str = ""
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Prompt tokens reused from the prefix cache (not evaluated again)."""
    completion_tokens: int = 0
    ttft_s: float = 0.0
    """Time to first token: from the request to the first generated token."""
    elapsed_s: float = 0.0
    tokens_per_s: float = 0.0
    """Completion tokens per second of decoding (after the first token)."""
    finish_reason: str = ""
    """``stop`` (the JSON closed), ``length``, ``loop``, ``cancelled``, ``error``."""
    rewinds: int = 0
    """Times the in-process engine took tokens back (repeats, Python that cannot parse)."""
    rewound_tokens: int = 0
    """Tokens taken back in all (decoded, then removed)."""


@dataclass(frozen=True)
class GenerationEvent:
    """Base of every event."""


@dataclass(frozen=True)
class PromptProcessed(GenerationEvent):
    """The prompt is evaluated; decoding starts."""

    prompt_tokens: int
    cached_prompt_tokens: int
    seconds: float


@dataclass(frozen=True)
class TokensGenerated(GenerationEvent):
    """New text arrived (one or a few tokens)."""

    text: str
    completion_tokens: int
    tokens_per_s: float
    elapsed_s: float
    rewind: int = 0
    """Characters taken back from the end of the text so far before ``text`` is added: the
    in-process engine rewound the answer where it went wrong (``engine.generate.backtrack``)."""

    def add_to(self, parts: list[str]) -> None:
        """Apply this event to the answer's text kept as ``parts`` (joined, it is the text)."""
        if self.rewind:
            whole = "".join(parts)
            parts[:] = [whole[: max(len(whole) - self.rewind, 0)]]
        if self.text:
            parts.append(self.text)


@dataclass(frozen=True)
class ProposalUpdated(GenerationEvent):
    """The proposal parsed so far (a partial JSON object), for the live file tree."""

    partial: dict[str, Any]


@dataclass(frozen=True)
class Finished(GenerationEvent):
    """Final: a complete proposal that validated as ``ChangeProposal``."""

    proposal: ChangeProposal
    stats: GenerationStats
    raw: str = ""


@dataclass(frozen=True)
class GenerationFailed(GenerationEvent):
    """Final: no valid proposal. Subclasses say why; ``partial`` keeps what was produced."""

    message: str
    hint: str = ""
    partial: dict[str, Any] | None = None
    raw: str = ""
    stats: GenerationStats = field(default_factory=GenerationStats)

    def __post_init__(self) -> None:
        # a server's error text may echo the API key it was sent: one redaction path
        object.__setattr__(self, "message", redact(self.message))
        object.__setattr__(self, "hint", redact(self.hint))

    @property
    def kind(self) -> str:
        """A stable short name (``truncated``, ``looping``...) for JSON and exit codes."""
        return _KINDS.get(type(self), "failed")


@dataclass(frozen=True)
class Truncated(GenerationFailed):
    """The token budget (``max_tokens``) or the context ended before the JSON closed."""

    limit: str = "max_tokens"


@dataclass(frozen=True)
class Looping(GenerationFailed):
    """A degenerate repetition was detected and generation stopped."""

    where: str = ""
    """The JSON location being written, e.g. ``files[0].path``."""


@dataclass(frozen=True)
class Cancelled(GenerationFailed):
    """The user cancelled."""


@dataclass(frozen=True)
class InvalidAnswer(GenerationFailed):
    """The answer did not validate as ``ChangeProposal`` (a backend ignored the schema)."""

    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromptTooLong(GenerationFailed):
    """The prompt does not fit the context with the reserved output budget."""

    prompt_tokens: int = 0
    n_ctx: int = 0
    reserved: int = 0


@dataclass(frozen=True)
class PromptTruncated(GenerationFailed):
    """The server evaluated fewer prompt tokens than were sent: it cut the prompt."""

    sent_tokens: int = 0
    evaluated_tokens: int = 0


@dataclass(frozen=True)
class BackendFailed(GenerationFailed):
    """The backend failed (server unreachable, model missing, HTTP error...)."""


@dataclass(frozen=True)
class HostCrashed(BackendFailed):
    """The model host process died mid-generation (a crash in llama.cpp, an OOM kill).

    The app goes on; the next generation starts a new host.
    """

    signal: str = ""
    """The signal's name (``SIGSEGV``), empty when the host exited with a code."""
    exit_code: int | None = None
    log_tail: tuple[str, ...] = ()
    """The last lines llama.cpp wrote to its log."""


_KINDS: dict[type, str] = {
    Truncated: "truncated",
    Looping: "looping",
    Cancelled: "cancelled",
    InvalidAnswer: "invalid",
    PromptTooLong: "prompt_too_long",
    PromptTruncated: "prompt_truncated",
    BackendFailed: "backend",
    HostCrashed: "host_crashed",
}

FinalEvent = Finished | GenerationFailed
