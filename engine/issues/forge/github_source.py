"""GitHub's open issues as an issue source, served from a local SQLite cache.

Why apart from the client (``engine.issues.forge.github``): the client is shared with
publishing (pull requests, labels); this is the issue list's side, with its offline cache,
its incremental refresh and the translation of GitHub's issue JSON into :class:`Issue`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from engine.core.errors import GitHubError, IssueNotFoundError
from engine.core.models import Issue, IssueComment
from engine.issues.forge.base import IssueSource, RefreshResult
from engine.issues.forge.cache import IssueCache
from engine.issues.forge.github import GitHubClient, GitHubRepo
from engine.issues.forge.github_token import ANONYMOUS_NOTE, Token

log = logging.getLogger(__name__)


def issue_from_json(data: dict[str, Any]) -> Issue:
    """An :class:`Issue` from GitHub's issue JSON."""
    milestone = data.get("milestone")
    updated = data.get("updated_at")
    return Issue(
        number=int(data["number"]),
        title=str(data.get("title") or ""),
        body=str(data.get("body") or ""),
        labels=[
            str(lab["name"] if isinstance(lab, dict) else lab) for lab in data.get("labels") or []
        ],
        assignees=[str(a.get("login")) for a in data.get("assignees") or [] if a],
        milestone=str(milestone.get("title")) if isinstance(milestone, dict) else None,
        state=str(data.get("state") or "open"),
        comments=int(data.get("comments") or 0),
        updated_at=_parse_time(updated),
        url=data.get("html_url"),
        source="github",
    )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class GitHubIssueSource(IssueSource):
    """A GitHub repository's open issues, served from a local SQLite cache.

    ``list_issues`` never touches the network (instant at startup, works offline);
    ``refresh`` fetches what changed since the last refresh (``since``), or everything the
    first time; ``comments`` are fetched on demand and cached.

    Args:
        repo: the GitHub repository.
        cache_path: the SQLite file (see :func:`engine.issues.forge.registry.issue_source_for`).
        token: the token, or None to read anonymously.
        timeout: seconds per request.
        retries: connection retries before a refresh is declared offline.
    """

    name: ClassVar[str] = "github"
    REMOTE: ClassVar[bool] = True
    HAS_COMMENTS: ClassVar[bool] = True

    def __init__(
        self,
        repo: GitHubRepo,
        cache_path: Path,
        token: Token | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 1,
    ) -> None:
        self.repo = repo
        self.token = token
        self.cache = IssueCache(cache_path, repo.key)
        self._timeout = timeout
        self._retries = retries
        self._client: GitHubClient | None = None

    @property
    def client(self) -> GitHubClient:
        """The API client, built on first use (startup never waits for it)."""
        if self._client is None:
            self._client = GitHubClient(
                self.repo, self.token, timeout=self._timeout, retries=self._retries
            )
        return self._client

    @property
    def anonymous(self) -> bool:
        """No token: reads are anonymous and publishing is impossible."""
        return self.token is None

    def describe(self) -> str:
        """One line for the UI: where issues come from and as whom."""
        who = f"token from {self.token.source}" if self.token else "anonymous"
        return f"GitHub {self.repo.full_name} ({who})"

    def list_issues(self) -> list[Issue]:
        """The cached open issues, newest update first (no network)."""
        return self.cache.issues()

    def get_issue(self, number: int) -> Issue:
        """Issue ``number`` from the cache, else from GitHub.

        Raises:
            IssueNotFoundError: GitHub has no such issue (or it is a pull request).
            GitHubError: GitHub failed, or cannot be reached and the issue is not cached.
        """
        cached = self.cache.get(number)
        if cached is not None:
            return cached
        try:
            data = self.client.issue(number)
        except GitHubError as exc:
            if exc.status in (404, 410):
                raise IssueNotFoundError(
                    f"{self.repo.full_name} has no issue #{number} ({exc.github_message})",
                    hint="run `agent-tui issues --refresh` to see the open issues",
                ) from None
            raise
        if "pull_request" in data:
            raise IssueNotFoundError(
                f"#{number} of {self.repo.full_name} is a pull request, not an issue"
            )
        issue = issue_from_json(data)
        if issue.state == "open":
            self.cache.upsert([issue])
        return issue

    def refresh(self, *, full: bool = False) -> RefreshResult:
        """Fetch what changed since the last refresh and update the cache.

        The first refresh (or ``full``) lists every open issue; later ones ask for every
        issue updated since the newest update seen (``state=all``), so closed issues leave the
        cache. Pull requests, which GitHub lists among issues, are skipped.

        Args:
            full: ignore ``since`` and rebuild the cache from every open issue.

        Returns:
            What happened; ``offline`` when GitHub could not be reached (the cache is served).

        Raises:
            GitHubError: GitHub answered with an error (auth, rate limit, not found...), with
                something that is not its JSON (a proxy's login page), or the client failed;
                the cache is left as it was.
        """
        since = None if full else self.cache.since()
        started = datetime.now(UTC)
        upserts: list[Issue] = []
        closed: list[int] = []
        newest = since
        try:
            for item in self.client.iter_issues(state="all" if since else "open", since=since):
                stamp = item.get("updated_at")
                if isinstance(stamp, str) and (newest is None or stamp > newest):
                    newest = stamp
                if "pull_request" in item:
                    continue
                issue = issue_from_json(item)
                if issue.state == "open":
                    upserts.append(issue)
                else:
                    closed.append(issue.number)
        except GitHubError as exc:
            if not exc.network:
                raise
            total = self.cache.count()
            when = self.cache.refreshed_at()
            stamp = when.astimezone().strftime("%Y-%m-%d %H:%M") if when else "never"
            return RefreshResult(
                fetched=0,
                total=total,
                refreshed_at=when,
                offline=True,
                message=f"offline: {exc.message}; serving {total} cached issues "
                f"(last refresh: {stamp})",
            )
        self.cache.apply(upserts, closed, since=newest, refreshed_at=started, replace=since is None)
        total = self.cache.count()
        message = f"{len(upserts)} updated, {len(closed)} closed" if since else f"{total} open"
        if self.anonymous:
            message += f"; {ANONYMOUS_NOTE}"
        return RefreshResult(
            fetched=len(upserts) + len(closed),
            total=total,
            refreshed_at=started,
            message=message,
        )

    def comments(self, number: int) -> list[IssueComment]:
        """Issue ``number``'s comments from GitHub (cached); the cached ones when offline.

        Raises:
            GitHubError: GitHub failed, or is unreachable and nothing is cached.
        """
        try:
            items = self.client.comments(number)
        except GitHubError as exc:
            cached = self.cache.comments(number)
            if exc.network and cached is not None:
                return cached
            raise
        comments = [
            IssueComment(
                author=str((c.get("user") or {}).get("login") or "ghost"),
                body=str(c.get("body") or ""),
                created_at=_parse_time(c.get("created_at")),
            )
            for c in items
        ]
        self.cache.put_comments(number, comments)
        return comments

    def last_refresh(self) -> datetime | None:
        """When the cache was last refreshed successfully (None: never)."""
        return self.cache.refreshed_at()
