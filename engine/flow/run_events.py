"""What an issue's run yields besides the backend's generation events, and the review it ends with.

Why apart from the run: the TUI's screens, the CLI and the batch read these events and the
``Review`` without driving a run themselves. ``retry_sampling`` is here because its answer is
an event (``RetrySampling``) the screen and the CLI show before the retry starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.config import AppConfig
from engine.core.events import (
    GenerationStats,
)
from engine.core.models import ChangeProposal

if TYPE_CHECKING:
    from engine.context.result import ContextResult
    from engine.review.checks.registry import Finding
    from engine.review.diff import ProposalDiff, RepoBase


@dataclass(frozen=True)
class SessionEvent:
    """Base of the events a run adds to the backend's ``GenerationEvent`` stream."""


@dataclass(frozen=True)
class ModelLoading(SessionEvent):
    """The model is being loaded (only yielded when it was not loaded yet)."""

    name: str


@dataclass(frozen=True)
class RetrySampling(SessionEvent):
    """This generation retries a loop or a truncation with other sampling settings.

    Greedy decoding after a loop would write the very same loop again, so a retry samples
    with a new seed and a small temperature (unless the user pinned both in their profile).
    """

    seed: int
    temperature: float
    reason: str
    """``loop`` or ``truncated``: what the previous attempt ended with."""

    def describe(self) -> str:
        """One line for the screen and the CLI."""
        what = "looped" if self.reason == "loop" else "was truncated"
        return (
            f"the last attempt {what}: retrying with seed {self.seed} and temperature "
            f"{self.temperature:g} (a greedy retry would repeat it)"
        )


RETRY_TEMPERATURE = 0.3
"""The temperature of a retry after a loop or a truncation when the profile is greedy."""


def retry_sampling(
    config: AppConfig, model_name: str, reason: str | None, retries: int
) -> RetrySampling | None:
    """The sampling of a retry after an attempt that ended with ``reason``.

    Args:
        config: the configuration (which file defined the profile).
        model_name: the model profile in use.
        reason: how the previous attempt ended (``loop``, ``truncated``; else no change).
        retries: how many retries came before this one (each gets its own seed).

    Returns:
        The seed and temperature to use, or None: not a retry after a loop or truncation,
        or the user pinned both ``temperature`` and ``seed`` in their own profile.
    """
    if reason not in ("loop", "truncated"):
        return None
    profile = config.profile(model_name)
    source = config.sources.get(model_name)
    bundled = config.files[0] if config.files else None
    user_defined = source is not None and source != bundled
    if user_defined and {"temperature", "seed"} <= profile.model_fields_set:
        return None
    temperature = profile.temperature if profile.temperature > 0 else RETRY_TEMPERATURE
    seed = (profile.seed + 1 + retries) & 0x7FFFFFFF
    return RetrySampling(seed=seed, temperature=temperature, reason=reason)


@dataclass(frozen=True)
class ModelReady(SessionEvent):
    """The model is loaded."""

    name: str
    seconds: float


@dataclass(frozen=True)
class ContextReady(SessionEvent):
    """The prompt is assembled (token numbers, shown and left-out files)."""

    context: ContextResult


@dataclass(frozen=True)
class Reviewed(SessionEvent):
    """The final event of a successful run: the proposal with its findings and diff."""

    review: Review


@dataclass
class Review:
    """A proposal as the user reviews it: the findings of the checks and the diff."""

    proposal: ChangeProposal
    findings: list[Finding]
    diff: ProposalDiff
    stats: GenerationStats | None = None
    generation_id: int | None = None
    acknowledged: bool = False
    """The user acknowledged the warnings (reset by every change to the proposal)."""
    base: RepoBase | None = None
    """What the proposal is compared with (for the old side of a diff)."""
    outcome: str = "generated"
    """What became of it (a proposal brought back from the history may be published)."""
    pr_url: str | None = None
    saved_at: str = ""
    """When a proposal brought back from the history was last saved (UTC, ISO)."""

    def base_text(self, path: str) -> str | None:
        """The base content of ``path`` (None: a new file, or not text)."""
        return self.base.read_text(path) if self.base is not None else None

    @property
    def errors(self) -> list[Finding]:
        """Findings that block publishing."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings the user must acknowledge before publishing."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def fixable(self) -> list[Finding]:
        """Findings ``IssueRun.fix`` can fix."""
        return [f for f in self.findings if f.fixable]

    def findings_for(self, path: str) -> list[Finding]:
        """The findings about one file."""
        return [f for f in self.findings if f.path == path]

    @property
    def publishable(self) -> bool:
        """No error finding, and the warnings (if any) were acknowledged."""
        return not self.errors and (self.acknowledged or not self.warnings)


__all__ = [
    "RETRY_TEMPERATURE",
    "ContextReady",
    "ModelLoading",
    "ModelReady",
    "RetrySampling",
    "Review",
    "Reviewed",
    "SessionEvent",
    "retry_sampling",
]
