"""The publish plan: everything a publish will do, worked out without changing anything.

Why a plan first: pushing and opening a pull request are outward actions. ``build_plan``
works out everything (branch, base, remote, draft, labels, ``Closes #N``, the test command,
a branch that already exists, a job already pending) without changing anything, so the TUI's
plan screen and ``agent-tui publish`` show the same facts and the same refusals (error
findings remain, no token, an unresolved branch conflict). ``engine.publish.runner`` executes
a plan without errors. Each refusal or warning is worked out by one small helper below;
``build_plan`` is longer than the others because its docstring names each of its options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from engine.core import gitcmd
from engine.core.config import AppConfig, OpenAIProfile
from engine.core.errors import AgentTuiError, GitHubError
from engine.core.models import ChangeProposal
from engine.core.textsafe import control_chars, safe
from engine.issues.forge.github import (
    GitHubClient,
    GitHubRepo,
    api_host,
    parse_remote_url,
    resolve_repo,
)
from engine.issues.forge.github_token import Token, resolve_token
from engine.publish import gitops
from engine.publish.provenance import Provenance, commit_message
from engine.publish.records import PublishJob, finding_to_json
from engine.publish.store import Store
from engine.review.checks.conventions import TRAILER_RE

#: the ``forge_facts`` key remembering that GitHub refuses draft pull requests in a repository
DRAFTS_UNSUPPORTED = "drafts_unsupported"
_CLOSES_RE = r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#{n}(?!\d)"

BranchChoice = Literal["new", "update"]


def key_envs(config: AppConfig) -> tuple[str, ...]:
    """Every ``api_key_env`` the configuration names (kept out of the test command's env)."""
    names = {p.api_key_env for p in config.models.values() if isinstance(p, OpenAIProfile)}
    return tuple(sorted(n for n in names if n))


def ensure_closes(body: str, issue: int) -> tuple[str, bool]:
    """``body`` with ``Closes #issue`` appended when no closing keyword names the issue.

    Returns:
        The body and whether it was changed.
    """
    if re.search(_CLOSES_RE.format(n=issue), body):
        return body, False
    return (body.rstrip() + f"\n\nCloses #{issue}\n").lstrip("\n"), True


@dataclass
class PublishPlan:
    """Everything a publish will do, computed without changing anything.

    ``errors`` block :func:`execute`; ``warnings`` are shown with the confirmation.
    """

    repo_dir: Path
    issue: int
    proposal: ChangeProposal
    branch: str
    base: str
    remote: str
    github: GitHubRepo | None
    """Where the pull request is opened (None: no GitHub; the PR is queued)."""
    head_owner: str | None
    draft: bool
    """Open it as a draft (False when asked but GitHub refuses drafts in this repository)."""
    labels: list[str]
    title: str
    body: str
    commit_message: str
    provenance: Provenance
    test_command: str | None
    test_timeout: float
    tests_in_body: bool
    update_existing: bool = False
    """Commit on top of the existing branch (and reuse its open pull request)."""
    branch_conflict: bool = False
    """The branch exists and no choice (new suffix / update) was made."""
    suggested_branch: str | None = None
    """The first free branch name, offered for a conflict."""
    existing_pr: str | None = None
    """An open pull request already using this branch (it will be reused)."""
    token_source: str | None = None
    """Where the token comes from (never the token); None: no token."""
    findings: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    generation_id: int | None = None
    key_envs: tuple[str, ...] = ()
    """The configured ``api_key_env`` variables: never in the test command's environment."""
    head_repo: str | None = None
    """``owner/name`` of a fork owned by the same owner the branch is pushed to (GitHub
    needs ``head_repo`` for it); None when the branch goes to the repository itself or to a
    fork of another owner (``owner:branch`` names it)."""
    drafts_unsupported: bool = False
    """A draft was asked for, but GitHub said this repository does not support draft pull
    requests (remembered from an earlier publish): it opens ready for review."""
    issue_title: str = ""
    """The issue's title, for the history entry of a publish that has none yet."""

    @property
    def ready(self) -> bool:
        """Nothing blocks publishing."""
        return not self.errors

    @property
    def head(self) -> str:
        """The pull request's ``head``: ``branch``, or ``owner:branch`` from a fork."""
        if self.github and self.head_owner and self.head_owner != self.github.owner:
            return f"{self.head_owner}:{self.branch}"
        return self.branch

    def describe(self) -> str:
        """The plan as plain text (the CLI's confirmation, logs)."""
        where = self.github.full_name if self.github else "(no GitHub: the PR is queued)"
        lines = [
            f"issue      #{self.issue}",
            f"branch     {safe(self.branch)}"
            + ("  (update: commit on top)" if self.update_existing else ""),
            f"base       {self.base}",
            f"remote     {self.remote}",
            f"pull req.  {where}  {'draft' if self.draft else 'ready for review'}"
            + ("  (this repository does not support drafts)" if self.drafts_unsupported else ""),
            f"title      {safe(self.title)}",
            f"labels     {safe(', '.join(self.labels)) or '-'}",
            f"closes     #{self.issue}",
            f"files      {safe(', '.join(f.path for f in self.proposal.files))}",
            f"tests      {safe(self.test_command or '-')}"
            + ("  (result in the PR body)" if self.test_command and self.tests_in_body else ""),
            f"token      {self.token_source or 'none'}",
        ]
        if self.existing_pr:
            lines.append(f"reuses     {self.existing_pr}")
        lines += [f"warning    {safe(w)}" for w in self.warnings]
        lines += [f"ERROR      {safe(e)}" for e in self.errors]
        return "\n".join(lines)


def _severity(finding: Any) -> str:
    value = getattr(finding, "severity", None)
    if value is None and isinstance(finding, dict):
        value = finding.get("severity")
    value = getattr(value, "value", value)
    return str(value or "").lower()


def _code(finding: Any) -> str:
    value = getattr(finding, "code", None)
    if value is None and isinstance(finding, dict):
        value = finding.get("code")
    return str(value or "")


def _branch_taken(repo: Path, remote: str, name: str, jobs: Sequence[PublishJob]) -> bool:
    return (
        gitops.branch_sha(repo, name) is not None
        or gitops.remote_branch_sha(repo, remote, name) is not None
        or any(j.branch == name and j.status != "cancelled" for j in jobs)
    )


def _proposal_errors(proposal: ChangeProposal) -> tuple[ChangeProposal, list[str]]:
    """The proposal validated again, and why it cannot be published as it is."""
    errors: list[str] = []
    try:
        proposal = ChangeProposal.model_validate(proposal.model_dump())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        errors.append(f"the proposal is not valid: {problems}")
    for f in proposal.files:
        try:
            gitops.check_path(f.path)
        except AgentTuiError as exc:
            errors.append(exc.message)
    for name in ("commit_message", "pr_title", "pr_body"):
        bad = control_chars(getattr(proposal, name), allow_newlines=name != "pr_title")
        if bad:
            errors.append(f"{name} holds control, escape or bidi characters ({', '.join(bad)})")
    if TRAILER_RE.search(proposal.commit_message):
        errors.append("the commit message has trailer lines (Signed-off-by:, Agent-Tui-*:)")
    return proposal, errors


@dataclass(frozen=True)
class _Where:
    """Where the branch is pushed and the pull request opened, and with which token."""

    github: GitHubRepo | None
    token: Token | None
    head_owner: str | None
    head_repo: str | None


def _where_to(repo: Path, config: AppConfig, errors: list[str], warnings: list[str]) -> _Where:
    """The GitHub repository, the fork the branch goes to and the token (problems appended)."""
    remote = config.publish.remote
    push_url = gitops.push_url(repo, remote)
    if push_url is None:
        errors.append(f"there is no remote named {remote!r}")
    github = resolve_repo(
        gitcmd.remote_url(repo, config.github.remote),
        api_url=config.github.api_url,
        repo=config.github.repo,
    )
    head_owner = github.owner if github else None
    head_repo = None
    if github and remote != config.github.remote and push_url:
        parsed = parse_remote_url(push_url)
        if parsed:
            head_owner = parsed[1]
            same_owner = parsed[1].lower() == github.owner.lower()
            if same_owner and parsed[2].lower() != github.name.lower():
                head_repo = f"{parsed[1]}/{parsed[2]}"  # a fork owned by the same owner
    token = (
        resolve_token(github.api_url, configured_api_url=config.github.api_url) if github else None
    )
    if github is None:
        warnings.append(
            f"remote {config.github.remote!r} is not on GitHub: the branch is pushed and the "
            "pull request waits in the outbox until [github] repo is configured"
        )
    elif token is None:
        if api_host(github.api_url) == "github.com":
            errors.append(
                "no GitHub token: opening a pull request needs GH_TOKEN, GITHUB_TOKEN or "
                "`gh auth login`"
            )
        else:
            errors.append(
                f"no GitHub token for {api_host(github.api_url)}: an Enterprise host needs "
                "GH_ENTERPRISE_TOKEN (or `gh auth login --hostname`) and its api_url in your "
                "own config (or a trusted repository config); plain http only on loopback"
            )
    return _Where(github, token, head_owner, head_repo)


def _base_branch(
    repo: Path, base: str | None, remote: str, client: GitHubClient | None, warnings: list[str]
) -> str:
    """The base branch: the configured one, GitHub's default, ``<remote>/HEAD``, the current."""
    if not base and client is not None:
        try:
            base = client.default_branch()
        except GitHubError as exc:
            warnings.append(f"could not ask GitHub for the default branch: {exc.message}")
    return base or gitops.remote_head_branch(repo, remote) or gitops.current_branch(repo) or "main"


@dataclass(frozen=True)
class _Branch:
    """The branch a publish goes to, and what to do about one that already exists."""

    name: str
    update_existing: bool = False
    conflict: bool = False
    suggested: str | None = None


def _choose_branch(
    repo: Path,
    branch: str,
    base: str,
    remote: str,
    jobs: Sequence[PublishJob],
    on_existing: BranchChoice | None,
    errors: list[str],
    warnings: list[str],
) -> _Branch:
    """The branch name after the user's choice for an existing one (problems appended)."""
    if not gitops.valid_branch_name(branch):
        errors.append(f"{branch!r} is not a valid branch name (check [publish] branch_prefix)")
    if branch == base:
        errors.append(f"the branch {branch!r} is the base branch")
    if not _branch_taken(repo, remote, branch, jobs):
        return _Branch(branch)
    n = 2
    while _branch_taken(repo, remote, f"{branch}-{n}", jobs):
        n += 1
    suggested = f"{branch}-{n}"
    if on_existing == "new":
        warnings.append(f"{branch} exists: publishing on {suggested}")
        return _Branch(suggested, suggested=suggested)
    if on_existing == "update":
        in_flight = [j for j in jobs if j.branch == branch]
        if in_flight:
            errors.append(
                f"job #{in_flight[0].id} for {branch} is still {in_flight[0].status}: "
                "run `agent-tui sync` first"
            )
        return _Branch(branch, update_existing=True, suggested=suggested)
    errors.append(
        f"branch {branch} already exists: publish on a new branch ({suggested}) "
        "or update it (commit on top)"
    )
    return _Branch(branch, conflict=True, suggested=suggested)


def _existing_pr(
    client: GitHubClient, head_owner: str | None, branch: str, warnings: list[str]
) -> str | None:
    """The open pull request an update of ``branch`` reuses (None: none, or GitHub failed)."""
    try:
        pulls = client.open_pulls_for_head(head_owner or client.repo.owner, branch)
    except GitHubError as exc:
        warnings.append(f"could not look for an open pull request: {exc.message}")
        return None
    if not pulls:
        return None
    existing = str(pulls[0].get("html_url") or f"#{pulls[0].get('number')}")
    warnings.append(f"pull request {existing} is already open: it is reused")
    return existing


def _drafts_refused(store: Store, github: GitHubRepo | None, warnings: list[str]) -> bool:
    """Whether GitHub said earlier that this repository refuses drafts (a warning appended)."""
    refused = store.fact(github.key, DRAFTS_UNSUPPORTED) if github else None
    if refused is None or github is None:
        return False
    warnings.append(
        f"GitHub does not support draft pull requests in {github.full_name} (it said so "
        f"on {refused[2][:10]}): the pull request opens ready for review"
    )
    return True


def build_plan(
    repo_dir: Path,
    config: AppConfig,
    proposal: ChangeProposal,
    issue: int,
    *,
    findings: Sequence[Any] = (),
    provenance: Provenance | None = None,
    generation_id: int | None = None,
    draft: bool | None = None,
    labels: Sequence[str] | None = None,
    base: str | None = None,
    on_existing: BranchChoice | None = None,
    run_tests: bool | None = None,
    tests_in_body: bool | None = None,
    ask_github: bool = True,
    issue_title: str = "",
) -> PublishPlan:
    """Work out a publish without changing anything.

    Args:
        repo_dir: the repository.
        config: the loaded configuration (``[publish]``, ``[github]``).
        proposal: the proposal to publish (validated again here).
        issue: the issue it closes.
        findings: the checks' findings (objects or dicts with ``severity``); any ``error``
            blocks publishing.
        provenance: model/prompt/seed for the commit trailers.
        generation_id: the history entry this proposal came from.
        draft: open the PR as a draft (default ``[publish] draft``).
        labels: labels for the PR, added to ``[publish] labels``.
        base: the base branch (default ``[publish] base``, else GitHub's default branch).
        on_existing: what to do when the branch exists: ``new`` (next free suffix) or
            ``update`` (commit on top, reuse its PR); None reports a conflict.
        run_tests: run ``[publish] test_command`` (default: when one is configured).
        tests_in_body: put the test result in the PR body (default ``[publish] tests_in_body``).
        ask_github: ask GitHub for the default branch and an existing PR (else only local
            facts are used).
        issue_title: the issue's title (kept in the history entry a publish without
            ``generation_id`` creates).

    Returns:
        The plan; check ``plan.errors`` (or ``plan.ready``) before :func:`execute`.

    Raises:
        RepoError: ``repo_dir`` is not a git repository.
    """
    repo = gitcmd.toplevel(repo_dir)
    settings = config.publish
    proposal, errors = _proposal_errors(proposal)
    warnings: list[str] = []
    blocking = [f for f in findings if _severity(f).endswith("error")]
    if blocking:
        first = getattr(blocking[0], "message", None) or str(blocking[0])
        errors.append(f"{len(blocking)} error finding(s) remain (first: {first}); fix them first")

    remote = settings.remote
    where = _where_to(repo, config, errors, warnings)
    github, token = where.github, where.token
    client = GitHubClient(github, token, timeout=config.github.timeout) if github else None
    base = _base_branch(
        repo, base or settings.base, remote, client if ask_github else None, warnings
    )

    store = Store.for_repo(repo)
    jobs = store.jobs(statuses=["pending", "failed"])
    want_draft = settings.draft if draft is None else draft
    drafts_unsupported = want_draft and _drafts_refused(store, github, warnings)
    want_draft = want_draft and not drafts_unsupported
    branch = _choose_branch(
        repo,
        f"{settings.branch_prefix}{issue}-{proposal.branch_suffix}",
        base,
        remote,
        jobs,
        on_existing,
        errors,
        warnings,
    )
    existing_pr = None
    if branch.update_existing and client is not None and ask_github and token is not None:
        existing_pr = _existing_pr(client, where.head_owner, branch.name, warnings)

    body, appended = ensure_closes(proposal.pr_body, issue)
    closes_blocks = any(_code(f) == "closes-missing" for f in blocking)
    if appended and not closes_blocks:  # else the error says what to do (f fixes it)
        warnings.append(f"'Closes #{issue}' will be added to the pull request body")
    provenance = provenance or Provenance()
    test_command = settings.test_command if run_tests is not False else None
    if run_tests and not settings.test_command:
        warnings.append("no test command is configured ([publish] test_command)")
    return PublishPlan(
        repo_dir=repo,
        issue=issue,
        proposal=proposal,
        branch=branch.name,
        base=base,
        remote=remote,
        github=github,
        head_owner=where.head_owner,
        draft=want_draft,
        labels=list(dict.fromkeys([*settings.labels, *(labels or [])])),
        title=proposal.pr_title,
        body=body,
        commit_message=commit_message(proposal.commit_message, provenance),
        provenance=provenance,
        test_command=test_command,
        test_timeout=settings.test_timeout,
        tests_in_body=settings.tests_in_body if tests_in_body is None else tests_in_body,
        update_existing=branch.update_existing,
        branch_conflict=branch.conflict,
        suggested_branch=branch.suggested,
        existing_pr=existing_pr,
        token_source=token.source if token else None,
        findings=[finding_to_json(f) for f in findings],
        warnings=warnings,
        errors=errors,
        generation_id=generation_id,
        key_envs=key_envs(config),
        head_repo=where.head_repo,
        drafts_unsupported=drafts_unsupported,
        issue_title=issue_title,
    )


def plan_with_choice(plan: PublishPlan, config: AppConfig, choice: BranchChoice) -> PublishPlan:
    """Rebuild a plan that had a branch conflict with the user's choice (new / update)."""
    return build_plan(
        plan.repo_dir,
        config,
        plan.proposal,
        plan.issue,
        findings=plan.findings,
        provenance=plan.provenance,
        generation_id=plan.generation_id,
        draft=plan.draft or plan.drafts_unsupported,
        labels=plan.labels,
        base=plan.base,
        on_existing=choice,
        run_tests=plan.test_command is not None,
        tests_in_body=plan.tests_in_body,
        issue_title=plan.issue_title,
    )


__all__ = [
    "DRAFTS_UNSUPPORTED",
    "BranchChoice",
    "PublishPlan",
    "build_plan",
    "ensure_closes",
    "key_envs",
    "plan_with_choice",
]
