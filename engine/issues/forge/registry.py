"""Which issue source a repository uses: GitHub when its remote is on GitHub, else local files.

Why one function: the TUI, the CLI and the session ask ``issue_source_for(repo_dir, config)``
and get an :class:`~engine.issues.forge.base.IssueSource`; adding GitLab or Gitea later means a new
branch here, not a change in any caller.

``[github] issues`` chooses: ``auto`` (GitHub when the remote is github.com, the configured
Enterprise host, or ``[github] repo`` is set; else the Markdown issues in
``.agent-tui/issues/``), ``github`` (GitHub or a clear error), ``local``.
"""

from __future__ import annotations

from pathlib import Path

from engine.core import gitcmd
from engine.core.config import AppConfig
from engine.core.errors import ConfigError
from engine.issues.forge.base import IssueSource
from engine.issues.forge.github import GitHubRepo, resolve_repo
from engine.issues.forge.github_source import GitHubIssueSource
from engine.issues.forge.github_token import resolve_token
from engine.issues.forge.local import LocalIssueSource

CACHE_FILE = "issues.sqlite"


def github_repo_for(repo_dir: Path, config: AppConfig) -> GitHubRepo | None:
    """The GitHub repository behind ``repo_dir`` (from ``[github]`` and the remote), or None.

    Args:
        repo_dir: a directory inside the repository.
        config: the loaded configuration.
    """
    url = gitcmd.remote_url(repo_dir, config.github.remote) if repo_dir.exists() else None
    return resolve_repo(url, api_url=config.github.api_url, repo=config.github.repo)


def cache_path(repo_dir: Path) -> Path:
    """The issue cache file for ``repo_dir`` (in its git directory)."""
    return gitcmd.state_dir(repo_dir) / CACHE_FILE


def issue_source_for(repo_dir: Path, config: AppConfig, *, use_gh_cli: bool = True) -> IssueSource:
    """The issue source ``repo_dir`` uses.

    Args:
        repo_dir: the repository directory.
        config: the loaded configuration.
        use_gh_cli: may ask ``gh auth token`` for a token.

    Returns:
        A :class:`GitHubIssueSource` or a :class:`LocalIssueSource`.

    Raises:
        ConfigError: ``[github] issues = "github"`` but no GitHub repository can be named.
    """
    mode = config.github.issues
    if mode == "local":
        return LocalIssueSource(repo_dir)
    repo = github_repo_for(repo_dir, config)
    if repo is None:
        if mode == "github":
            remote = config.github.remote
            raise ConfigError(
                f'[github] issues = "github", but remote {remote!r} is not on GitHub',
                hint='set [github] repo = "owner/name" (and api_url for GitHub Enterprise)',
            )
        return LocalIssueSource(repo_dir)
    token = resolve_token(repo.api_url, configured_api_url=config.github.api_url, use_gh=use_gh_cli)
    return GitHubIssueSource(
        repo, cache_path(repo_dir), token, timeout=config.github.timeout, retries=1
    )
