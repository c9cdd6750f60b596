"""The small interface every issue source implements.

Why: the TUI and the CLI list, refresh and read issues without knowing where they come from,
so GitLab or Gitea can be added later without touching them. Capability flags say what a
source can do instead of methods that raise ``NotImplementedError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from engine.core.models import Issue, IssueComment


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did."""

    fetched: int
    """Issues received in this refresh (0 when nothing changed)."""
    total: int
    """Open issues known after the refresh."""
    refreshed_at: datetime | None
    """When the cache was last refreshed successfully (None: never)."""
    offline: bool = False
    """The source could not be reached; the cache was served."""
    message: str = ""
    """What the user should know (e.g. GitHub's error message, "served from cache")."""


class IssueSource(ABC):
    """Where issues come from."""

    name: ClassVar[str]
    """Short name shown in the UI (``github``, ``local``)."""
    REMOTE: ClassVar[bool] = False
    """Talks to a server (refresh may fail offline)."""
    HAS_COMMENTS: ClassVar[bool] = False

    @abstractmethod
    def list_issues(self) -> list[Issue]:
        """Open issues, instantly (from a cache or local files), newest update first."""

    @abstractmethod
    def get_issue(self, number: int) -> Issue:
        """One issue.

        Raises:
            engine.core.errors.AgentTuiError: when there is no such issue.
        """

    def refresh(self) -> RefreshResult:
        """Bring the local view up to date (no-op for local sources)."""
        issues = self.list_issues()
        return RefreshResult(fetched=0, total=len(issues), refreshed_at=None)

    def comments(self, number: int) -> list[IssueComment]:
        """Comments of issue ``number`` (empty when the source has none)."""
        return []
