"""Publishing a proposal: a plan the user confirms, then steps that never lose anything.

Why a plan first: pushing and opening a pull request are outward actions. ``build_plan``
works out everything (branch, base, remote, draft, labels, ``Closes #N``, the test command,
a branch that already exists, a job already pending) without changing anything, so the TUI's
plan screen and ``agent-tui publish`` show the same facts and the same refusals (error
findings remain, no token, an unresolved branch conflict).

Why an outbox: ``execute`` stores a publish job (``engine.publish.store``) before it acts, then
walks its state machine ``planned -> committed -> pushed -> pr_opened -> done``, recording each
step after it happened. Every step is idempotent and checks the world before acting (the branch
ref is compare-and-swapped, a push of the same commit is a no-op, an open pull request for the
head is looked up before one is created), so a job interrupted anywhere (network down,
GitHub failing, the process killed) is resumed by :func:`sync` without duplicates. A network
failure leaves the job ``pending`` (exit status 8 in the CLI); a refusal by git or GitHub
leaves it ``failed`` with their own message; either way the commit stays on its branch.

The user's checkout is never touched: the commit is built in a temporary worktree inside the
git directory (``engine.publish.gitops``), and the token only ever lives in one git process's
environment and the API client's headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from engine.core import gitcmd
from engine.core.config import AppConfig, LlamaCppProfile, OllamaProfile, OpenAIProfile
from engine.core.errors import AgentTuiError, GitHubError, PublishError, RepoError
from engine.core.models import ChangeProposal
from engine.core.textsafe import control_chars, safe
from engine.issues.forge.github import (
    GitHubClient,
    GitHubRepo,
    Token,
    api_host,
    is_loopback,
    parse_remote_url,
    resolve_repo,
    resolve_token,
)
from engine.publish import gitops
from engine.publish.store import PublishJob, Store, finding_to_json
from engine.review.checks.conventions import TRAILER_RE

log = logging.getLogger(__name__)

#: test hook: the process kills itself (SIGKILL) when it reaches this checkpoint
KILL_AT_ENV = "AGENT_TUI_KILL_AT"
CHECKPOINTS = (
    "planned",
    "commit_created",
    "committed",
    "push_done",
    "pushed",
    "pr_created",
    "pr_opened",
)
TRAILER_PREFIX = "Agent-Tui"
#: the ``forge_facts`` key remembering that GitHub refuses draft pull requests in a repository
DRAFTS_UNSUPPORTED = "drafts_unsupported"
#: the ``forge_facts`` key (per API host) holding when GitHub's rate limit lets us call again
RETRY_NOT_BEFORE = "retry_not_before"
_CLOSES_RE = r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#{n}(?!\d)"

Step = Literal["prepare", "fetch", "test", "commit", "branch", "push", "pull_request", "labels"]
BranchChoice = Literal["new", "update"]


@dataclass(frozen=True)
class PublishProgress:
    """One publish step started, finished, failed or was skipped (for the TUI and the CLI)."""

    step: str
    state: Literal["started", "done", "failed", "skipped", "queued"]
    """``queued``: the step waits in the outbox (expected offline or without GitHub)."""
    detail: str = ""


ProgressCallback = Callable[[PublishProgress], None]


def _checkpoint(name: str) -> None:
    """Die here when the test hook names this checkpoint (proves crash safety in tests)."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------------------------
# provenance


@dataclass(frozen=True)
class Provenance:
    """What produced a proposal, recorded as commit trailers so a change can be reproduced."""

    model_profile: str = ""
    model_ref: str = ""
    """The model file's ``sha256:...`` or the served model's tag."""
    prompt_profile: str = ""
    prompt_hash: str = ""
    seed: int | None = None

    def trailers(self) -> list[tuple[str, str]]:
        """``(key, value)`` commit trailers for the known fields."""
        pairs = [
            ("Model-Profile", self.model_profile),
            ("Model", self.model_ref),
            ("Prompt-Profile", self.prompt_profile),
            ("Prompt-Hash", self.prompt_hash),
            ("Seed", "" if self.seed is None else str(self.seed)),
        ]
        return [(f"{TRAILER_PREFIX}-{k}", _one_line(v)) for k, v in pairs if v]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def file_sha256(path: Path, store: Store | None = None) -> str:
    """``sha256:<hex>`` of a (model) file, remembered per size and mtime in ``store``."""
    if store is not None:
        cached = store.cached_hash(path)
        if cached:
            return cached
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = f"sha256:{digest.hexdigest()}"
    if store is not None:
        store.remember_hash(path, value)
    return value


def model_ref_for(
    profile: LlamaCppProfile | OllamaProfile | OpenAIProfile, store: Store | None = None
) -> str:
    """The model's reproducible identity: the GGUF's hash, or the served model's tag.

    Args:
        profile: the model profile.
        store: remembers file hashes (a GGUF is hashed once per size/mtime).

    Returns:
        ``sha256:<hex>`` (llama.cpp), ``ollama:<tag>`` or ``openai:<model>@<base_url>``;
        empty when the GGUF cannot be found.
    """
    if isinstance(profile, LlamaCppProfile):
        from engine.generate.modelfile import resolve_gguf

        try:
            return file_sha256(resolve_gguf(profile), store)
        except (AgentTuiError, OSError):
            return ""
    if isinstance(profile, OllamaProfile):
        return f"ollama:{profile.model}"
    return f"openai:{profile.model}@{profile.base_url}"


def provenance_from_history(
    store: Store, generation_id: int, config: AppConfig | None = None
) -> Provenance:
    """The provenance of a stored generation (the model file hashed when it is a GGUF).

    Raises:
        PublishError: no generation has that id.
    """
    record = store.generation(generation_id)
    if record is None:
        raise PublishError(
            f"no generation #{generation_id} in the history",
            hint="`agent-tui history` lists them",
        )
    model_ref = record.model_ref
    if config is not None and record.model_profile in config.models:
        model_ref = model_ref_for(config.models[record.model_profile], store) or model_ref
    return Provenance(
        record.model_profile, model_ref, record.prompt_profile, record.prompt_hash, record.seed
    )


def key_envs(config: AppConfig) -> tuple[str, ...]:
    """Every ``api_key_env`` the configuration names (kept out of the test command's env)."""
    names = {p.api_key_env for p in config.models.values() if isinstance(p, OpenAIProfile)}
    return tuple(sorted(n for n in names if n))


def commit_message(message: str, provenance: Provenance) -> str:
    """The proposal's commit message followed by the provenance trailers."""
    text = message.strip() + "\n"
    trailers = provenance.trailers()
    if trailers:
        text += "\n" + "".join(f"{k}: {v}\n" for k, v in trailers)
    return text


def ensure_closes(body: str, issue: int) -> tuple[str, bool]:
    """``body`` with ``Closes #issue`` appended when no closing keyword names the issue.

    Returns:
        The body and whether it was changed.
    """
    if re.search(_CLOSES_RE.format(n=issue), body):
        return body, False
    return (body.rstrip() + f"\n\nCloses #{issue}\n").lstrip("\n"), True


# ----------------------------------------------------------------------------------------------
# the plan


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
    errors: list[str] = []
    warnings: list[str] = []

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

    blocking = [f for f in findings if _severity(f).endswith("error")]
    if blocking:
        first = getattr(blocking[0], "message", None) or str(blocking[0])
        errors.append(f"{len(blocking)} error finding(s) remain (first: {first}); fix them first")

    remote = settings.remote
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
    client = GitHubClient(github, token, timeout=config.github.timeout) if github else None

    base = base or settings.base
    if not base and client is not None and ask_github:
        try:
            base = client.default_branch()
        except GitHubError as exc:
            warnings.append(f"could not ask GitHub for the default branch: {exc.message}")
    if not base:
        base = gitops.remote_head_branch(repo, remote) or gitops.current_branch(repo) or "main"

    store = Store.for_repo(repo)
    jobs = store.jobs(statuses=["pending", "failed"])
    want_draft = settings.draft if draft is None else draft
    drafts_unsupported = False
    refused = store.fact(github.key, DRAFTS_UNSUPPORTED) if github and want_draft else None
    if refused is not None and github is not None:
        drafts_unsupported, want_draft = True, False
        warnings.append(
            f"GitHub does not support draft pull requests in {github.full_name} (it said so "
            f"on {refused[2][:10]}): the pull request opens ready for review"
        )
    suffix = proposal.branch_suffix
    branch = f"{settings.branch_prefix}{issue}-{suffix}"
    update_existing = False
    conflict = False
    suggested: str | None = None
    if not gitops.valid_branch_name(branch):
        errors.append(f"{branch!r} is not a valid branch name (check [publish] branch_prefix)")
    if branch == base:
        errors.append(f"the branch {branch!r} is the base branch")
    in_flight = [j for j in jobs if j.branch == branch]
    if _branch_taken(repo, remote, branch, jobs):
        n = 2
        while _branch_taken(repo, remote, f"{branch}-{n}", jobs):
            n += 1
        suggested = f"{branch}-{n}"
        if on_existing == "new":
            warnings.append(f"{branch} exists: publishing on {suggested}")
            branch = suggested
        elif on_existing == "update":
            if in_flight:
                errors.append(
                    f"job #{in_flight[0].id} for {branch} is still {in_flight[0].status}: "
                    "run `agent-tui sync` first"
                )
            update_existing = True
        else:
            conflict = True
            errors.append(
                f"branch {branch} already exists: publish on a new branch ({suggested}) "
                "or update it (commit on top)"
            )

    existing_pr = None
    if update_existing and client is not None and ask_github and token is not None:
        try:
            pulls = client.open_pulls_for_head(head_owner or github.owner, branch)  # type: ignore[union-attr]
        except GitHubError as exc:
            warnings.append(f"could not look for an open pull request: {exc.message}")
        else:
            if pulls:
                existing_pr = str(pulls[0].get("html_url") or f"#{pulls[0].get('number')}")
                warnings.append(f"pull request {existing_pr} is already open: it is reused")

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
        branch=branch,
        base=base,
        remote=remote,
        github=github,
        head_owner=head_owner,
        draft=want_draft,
        labels=list(dict.fromkeys([*settings.labels, *(labels or [])])),
        title=proposal.pr_title,
        body=body,
        commit_message=commit_message(proposal.commit_message, provenance),
        provenance=provenance,
        test_command=test_command,
        test_timeout=settings.test_timeout,
        tests_in_body=settings.tests_in_body if tests_in_body is None else tests_in_body,
        update_existing=update_existing,
        branch_conflict=conflict,
        suggested_branch=suggested,
        existing_pr=existing_pr,
        token_source=token.source if token else None,
        findings=[finding_to_json(f) for f in findings],
        warnings=warnings,
        errors=errors,
        generation_id=generation_id,
        key_envs=key_envs(config),
        head_repo=head_repo,
        drafts_unsupported=drafts_unsupported,
        issue_title=issue_title,
    )


# ----------------------------------------------------------------------------------------------
# executing


@dataclass
class PublishResult:
    """How a publish (or a retry by ``sync``) ended."""

    job_id: int
    status: str
    """``done``, ``pending`` (queued in the outbox), ``failed`` or ``cancelled``."""
    state: str
    """The job's last completed step (``planned``...``done``)."""
    issue: int
    branch: str
    head_sha: str | None
    pr_url: str | None
    pr_number: int | None
    pr_reused: bool
    message: str
    test_summary: str = ""
    draft: bool | None = None
    """Whether the pull request was opened (or is to be opened) as a draft: False when a
    draft was asked for but GitHub does not support drafts in the repository."""
    error: AgentTuiError | None = None
    """The typed error behind a ``failed``/``pending`` result (for the TUI's error modal)."""
    hint: str = ""
    """What the user can do about a queued job (without naming the command that retries it:
    the caller knows whether that is ``agent-tui sync`` or a later run of it)."""

    @property
    def published(self) -> bool:
        """The pull request is open."""
        return self.status == "done"

    @property
    def queued(self) -> bool:
        """The job waits in the outbox for ``agent-tui sync``."""
        return self.status == "pending"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (no error object)."""
        data = {k: v for k, v in self.__dict__.items() if k != "error"}
        if self.error is not None:
            data["error"] = {"title": self.error.title, "message": self.error.message}
        return data


@contextlib.contextmanager
def publish_lock(repo: Path, timeout: float = 60.0) -> Iterator[None]:
    """One publisher at a time per repository (the TUI and ``sync`` may overlap).

    Raises:
        PublishError: another publish held the lock for ``timeout`` seconds.
    """
    path = gitcmd.state_dir(repo) / "publish.lock"
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            yield
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PublishError(
                        "another agent-tui process is publishing in this repository",
                        hint="wait for it to finish, then retry (or run `agent-tui sync`)",
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def execute(
    plan: PublishPlan,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> PublishResult:
    """Publish ``plan``: job, commit in a worktree, (tests), branch, push, pull request, labels.

    Args:
        plan: a plan from :func:`build_plan` without errors.
        progress: called at each step (from this thread).
        cancel: set it to stop before the push (the job is then ``cancelled``; a commit
            already made stays on its branch). Once pushed, the pull request is still opened.

    Returns:
        The result: ``done`` (PR URL), ``pending`` (queued in the outbox: network),
        ``failed`` (git's or GitHub's message; the branch is kept) or ``cancelled``.

    Raises:
        PublishError: the plan has errors (error findings, no token, branch conflict...), or
            another publish is running.
    """
    if plan.errors:
        raise PublishError(
            "cannot publish: " + "; ".join(plan.errors),
            hint="resolve these, then build the plan again",
        )
    repo = plan.repo_dir
    store = Store.for_repo(repo)
    with publish_lock(repo):
        gitops.cleanup_worktrees(repo)
        generation_id = plan.generation_id
        # the history keeps the proposal as published (the body with its "Closes #N"); a
        # generation keeps the model's original next to it
        published = {**plan.proposal.model_dump(), "pr_body": plan.body}
        if generation_id is None:
            p = plan.provenance
            generation_id = store.record_generation(
                issue_number=plan.issue,
                issue_title=plan.issue_title,
                model_profile=p.model_profile,
                model_ref=p.model_ref,
                prompt_profile=p.prompt_profile,
                prompt_hash=p.prompt_hash,
                seed=p.seed,
                proposal=plan.proposal.model_dump(),
                findings=plan.findings,
                outcome="queued",
                detail="publishing",
            )
        record = store.generation(generation_id)
        if record is not None and record.proposal != published:
            store.save_edit(generation_id, published)
        parent = None
        if plan.update_existing:
            parent = gitops.branch_sha(repo, plan.branch) or gitops.remote_branch_sha(
                repo, plan.remote, plan.branch
            )
        job = store.add_job(
            PublishJob(
                issue_number=plan.issue,
                branch=plan.branch,
                base=plan.base,
                remote=plan.remote,
                proposal=plan.proposal.model_dump(),
                commit_message=plan.commit_message,
                pr_title=plan.title,
                pr_body=plan.body,
                # asked as a draft: the runner opens it ready (and says so) where GitHub
                # refuses drafts, whether known now or learnt when the PR is opened
                draft=plan.draft or plan.drafts_unsupported,
                labels=list(plan.labels),
                github_repo=plan.github.full_name if plan.github else None,
                api_url=plan.github.api_url if plan.github else None,
                head_owner=plan.head_owner,
                head_repo=plan.head_repo,
                update_existing=plan.update_existing,
                parent_sha=parent,
                generation_id=generation_id,
                test_command=plan.test_command,
                test_timeout=plan.test_timeout,
                tests_in_body=plan.tests_in_body,
            )
        )
        store.set_outcome(generation_id, "queued", detail="publishing", job_id=job.id)
        _checkpoint("planned")
        return _Runner(store, repo, progress, cancel, plan.key_envs).run(job)


def sync(
    repo_dir: Path,
    config: AppConfig | None = None,
    *,
    include_failed: bool = False,
    progress: ProgressCallback | None = None,
    job_ids: Collection[int] | None = None,
) -> list[PublishResult]:
    """Retry every pending job of the outbox (``agent-tui sync``), oldest first.

    Each job resumes at its recorded state. A job queued because no GitHub repository was
    known picks up the current ``[github]`` configuration.

    Args:
        repo_dir: the repository.
        config: the configuration (for jobs still lacking a GitHub repository).
        include_failed: retry ``failed`` jobs too (after fixing what GitHub refused).
        progress: called at each step.
        job_ids: only these jobs (a resumed batch finishes its own jobs, not the others).

    Returns:
        One result per job tried (empty: nothing to do).

    Raises:
        RepoError: not a git repository.
        PublishError: another publish is running.
    """
    repo = gitcmd.toplevel(repo_dir)
    store = Store.for_repo(repo)
    results = []
    with publish_lock(repo):
        gitops.cleanup_worktrees(repo)
        for job in store.pending_jobs(include_failed=include_failed):
            if job_ids is not None and job.id not in job_ids:
                continue
            if job.github_repo is None and config is not None:
                github = resolve_repo(
                    gitcmd.remote_url(repo, config.github.remote),
                    api_url=config.github.api_url,
                    repo=config.github.repo,
                )
                if github is not None:
                    store.update_job(
                        job,
                        github_repo=github.full_name,
                        api_url=github.api_url,
                        head_owner=job.head_owner or github.owner,
                    )
            store.update_job(job, status="pending", attempts=job.attempts + 1)
            keys = key_envs(config) if config is not None else ()
            results.append(_Runner(store, repo, progress, None, keys).run(job))
    return results


def outbox(repo_dir: Path, *, include_done: bool = False) -> list[PublishJob]:
    """The jobs of the outbox (pending and failed; all with ``include_done``)."""
    store = Store.for_repo(gitcmd.toplevel(repo_dir))
    if include_done:
        return store.jobs()
    return store.jobs(statuses=["pending", "failed"])


class _Runner:
    """Walks one job's state machine; every step is recorded after it happened."""

    def __init__(
        self,
        store: Store,
        repo: Path,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        key_envs: Sequence[str] = (),
    ) -> None:
        self.key_envs = tuple(key_envs)
        self.store = store
        self.repo = repo
        self.progress = progress or (lambda _p: None)
        self.cancel = cancel
        self._tokens: dict[str, Token | None] = {}
        self._notes: dict[int, str] = {}
        """What the user should know about a job's pull request (opened ready for review
        because GitHub refuses drafts), by job id."""

    # -- helpers --------------------------------------------------------------------------

    def _say(self, step: str, state: Any, detail: str = "") -> None:
        try:
            self.progress(PublishProgress(step, state, detail))
        except Exception:  # a broken progress display must not break a publish
            log.exception("progress callback failed")

    def _github(self, job: PublishJob) -> GitHubRepo | None:
        if not job.github_repo:
            return None
        owner, _, name = job.github_repo.partition("/")
        return GitHubRepo(owner, name, job.api_url or "https://api.github.com")

    def _token(self, github: GitHubRepo | None) -> Token | None:
        if github is None:
            return None
        # the job's api_url was recorded from the trusted configuration when it was planned
        # (or synced), and the outbox lives in the git directory, which no clone carries
        key = github.api_url
        if key not in self._tokens:
            self._tokens[key] = resolve_token(key, configured_api_url=key)
        return self._tokens[key]

    def _push_token(self, job: PublishJob) -> str | None:
        """The token, only when the push goes to the GitHub host the token belongs to."""
        github = self._github(job)
        token = self._token(github)
        url = gitops.push_url(self.repo, job.remote) or ""
        parsed = parse_remote_url(url)
        if token is None or github is None or parsed is None:
            return None
        parts = urlsplit(url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            return None  # never a token over plain http to another machine
        return token.value if parsed[0] == api_host(github.api_url) else None

    def _result(self, job: PublishJob, message: str, error: AgentTuiError | None = None) -> Any:
        assert job.id is not None
        github = self._github(job)
        draft = job.draft and not (github and self.store.fact(github.key, DRAFTS_UNSUPPORTED))
        return PublishResult(
            job_id=job.id,
            status=job.status,
            state=job.state,
            issue=job.issue_number,
            branch=job.branch,
            head_sha=job.head_sha,
            pr_url=job.pr_url,
            pr_number=job.pr_number,
            pr_reused=job.pr_reused,
            message=message,
            test_summary=job.test_summary,
            draft=draft,
            error=error,
        )

    def _outcome(self, job: PublishJob, outcome: Any, detail: str) -> None:
        if job.generation_id is not None:
            self.store.set_outcome(
                job.generation_id, outcome, detail=detail, job_id=job.id, pr_url=job.pr_url
            )

    def _queue(self, job: PublishJob, step: str, error: AgentTuiError) -> PublishResult:
        msg = f"{step}: {error.message}"
        self.store.update_job(job, status="pending", last_error=msg)
        self._outcome(job, "queued", msg)
        self._say(step, "queued", error.message)
        result = self._result(job, f"queued in the outbox: {error.message}", error)
        result.hint = error.hint or "wait until GitHub can be reached"
        return result

    def _fail(self, job: PublishJob, step: str, error: AgentTuiError) -> PublishResult:
        msg = f"{step}: {error.message}"
        self.store.update_job(job, status="failed", last_error=msg)
        kept = f"; branch {job.branch} is kept" if job.head_sha else ""
        self._outcome(job, "failed", msg + kept)
        self._say(step, "failed", error.message)
        return self._result(job, f"{error.title}: {error.message}{kept}", error)

    def _cancelled(self, job: PublishJob, step: str) -> PublishResult | None:
        if self.cancel is None or not self.cancel.is_set():
            return None
        kept = f"; branch {job.branch} is kept locally" if job.head_sha else ""
        self.store.update_job(job, status="cancelled", last_error=f"cancelled before {step}")
        self._outcome(job, "failed", f"publish cancelled before {step}{kept}")
        self._say(step, "skipped", "cancelled")
        return self._result(job, f"cancelled before {step}{kept}")

    # -- the state machine ----------------------------------------------------------------

    def run(self, job: PublishJob) -> PublishResult:
        steps = {
            "planned": self._commit,
            "committed": self._push,
            "pushed": self._pull_request,
            "pr_opened": self._labels,
        }
        while job.state != "done":
            result = steps[job.state](job)
            if result is not None:
                return result
        self.store.update_job(job, status="done", last_error="")
        note = self._notes.get(job.id or 0, "")
        self._outcome(job, "published", (job.pr_url or "") + (f" ({note})" if note else ""))
        verb = "reused" if job.pr_reused else "opened"
        message = f"pull request {verb}: {job.pr_url}" + (f"; {note}" if note else "")
        return self._result(job, message)

    def _commit(self, job: PublishJob) -> PublishResult | None:
        stop = self._cancelled(job, "commit")
        if stop:
            return stop
        repo = self.repo
        base_sha = None
        if job.update_existing:
            parent = gitops.branch_sha(repo, job.branch) or gitops.remote_branch_sha(
                repo, job.remote, job.branch
            )
            if parent is None:
                return self._fail(
                    job, "commit", PublishError(f"the branch {job.branch} to update is gone")
                )
        else:
            self._say("fetch", "started", f"{job.remote}/{job.base}")
            token = self._push_token(job)
            problem = gitops.fetch_branch(repo, job.remote, job.base, token=token)
            base_sha = gitops.remote_branch_sha(repo, job.remote, job.base)
            if problem:
                if base_sha is None:
                    base_sha = gitops.branch_sha(repo, job.base)
                self._say("fetch", "failed", f"using the last known {job.base}: {problem}")
            else:
                self._say("fetch", "done", (base_sha or "")[:12])
            if base_sha is None:
                error = PublishError(
                    f"the base branch {job.base!r} exists neither on {job.remote} nor locally",
                    hint="set [publish] base, or pass --base",
                )
                return self._fail(job, "commit", error)
            parent = base_sha
        worktree = gitops.worktrees_dir(repo) / f"job-{job.id}"
        self._say("commit", "started", f"worktree on {parent[:12]}")
        try:
            gitops.add_worktree(repo, worktree, parent)
            files = [(f["path"], f["content"]) for f in job.proposal["files"]]
            written = gitops.write_files(worktree, files)
            if job.test_command:
                stop = self._cancelled(job, "test")
                if stop:
                    return stop
                self._say("test", "started", job.test_command)
                run = gitops.run_test_command(
                    worktree, job.test_command, job.test_timeout, drop=self.key_envs
                )
                self.store.update_job(job, test_summary=_test_text(run))
                if not run.passed:
                    self._say("test", "failed", run.summary())
                    return self._fail(
                        job,
                        "test",
                        PublishError(
                            f"{run.summary()}; nothing was committed",
                            title="Tests failed",
                            hint="fix the proposal, or publish with --no-tests",
                        ),
                    )
                self._say("test", "done", run.summary())
            sha = gitops.commit_all(worktree, written, job.commit_message)
            if sha is None:
                error = PublishError(
                    f"the proposal's files are identical to {job.base}: nothing to commit",
                    title="No changes",
                )
                return self._fail(job, "commit", error)
            _checkpoint("commit_created")
            self.store.update_job(
                job, state="committed", head_sha=sha, parent_sha=parent, base_sha=base_sha
            )
            self._say("commit", "done", sha[:12])
            _checkpoint("committed")
        except AgentTuiError as exc:  # unsafe path, git refused, no identity...
            return self._fail(job, "commit", exc)
        finally:
            gitops.remove_worktree(repo, worktree)
        return None

    def _ensure_branch(self, job: PublishJob) -> None:
        """Make ``refs/heads/<branch>`` hold the job's commit (after a crash it may not)."""
        assert job.head_sha is not None
        tip = gitops.branch_sha(self.repo, job.branch)
        if tip == job.head_sha:
            return
        if tip is None:
            gitops.create_branch(self.repo, job.branch, job.head_sha)
        elif job.update_existing and tip == job.parent_sha:
            gitops.create_branch(self.repo, job.branch, job.head_sha, old=tip)
        elif not gitops.is_ancestor(self.repo, job.head_sha, tip):
            self._say(
                "branch",
                "failed",
                f"{job.branch} was moved to {tip[:12]}; pushing the job's commit "
                f"{job.head_sha[:12]} anyway",
            )
            return
        self._say("branch", "done", job.branch)

    def _push(self, job: PublishJob) -> PublishResult | None:
        try:
            self._ensure_branch(job)
        except RepoError as exc:
            return self._fail(job, "branch", exc)
        stop = self._cancelled(job, "push")
        if stop:
            return stop
        assert job.head_sha is not None
        self._say("push", "started", f"{job.branch} -> {job.remote}")
        outcome = gitops.push(
            self.repo, job.remote, job.head_sha, job.branch, token=self._push_token(job)
        )
        if not outcome.ok:
            error = PublishError(f"git push failed: {outcome.message}", title="Push failed")
            if outcome.network:
                return self._queue(job, "push", error)
            return self._fail(job, "push", error)
        _checkpoint("push_done")
        self.store.update_job(job, state="pushed")
        self._say("push", "done", job.branch)
        _checkpoint("pushed")
        return None

    def _pull_request(self, job: PublishJob) -> PublishResult | None:
        github = self._github(job)
        if github is None:
            error = PublishError(
                "no GitHub repository is known for this remote",
                title="Pull request queued",
                hint="set [github] repo (and api_url) in the config",
            )
            return self._queue(job, "pull_request", error)
        token = self._token(github)
        if token is None:
            error = PublishError(
                "no GitHub token to open the pull request",
                title="Pull request queued",
                hint="export GH_TOKEN (or run `gh auth login`)",
            )
            return self._queue(job, "pull_request", error)
        waiting = self._rate_limit_wait(github)
        if waiting is not None:
            return self._queue(job, "pull_request", waiting)
        client = GitHubClient(github, token)
        owner = job.head_owner or github.owner
        head = f"{owner}:{job.branch}" if owner != github.owner else job.branch
        head_repo = job.head_repo
        self._say("pull_request", "started", f"{head_repo or head} -> {job.base}")
        try:
            pulls = client.open_pulls_for_head(owner, job.branch, head_repo=head_repo)
            reused = bool(pulls)
            if not pulls:
                body = job.pr_body
                if job.tests_in_body and job.test_summary:
                    body = body.rstrip() + "\n\n---\n" + job.test_summary
                if job.draft and self.store.fact(github.key, DRAFTS_UNSUPPORTED):
                    self._ready_instead_of_draft(job, github)
                try:
                    created = self._create_pull(client, job, github, body, head)
                    pulls = [created]
                except GitHubError as exc:
                    if exc.status != 422 or "already exists" not in exc.github_message:
                        raise
                    pulls = client.open_pulls_for_head(owner, job.branch, head_repo=head_repo)
                    reused = True
                    if not pulls:
                        raise
                _checkpoint("pr_created")
        except GitHubError as exc:
            if exc.rate_limited and exc.retry_after:
                # honour Retry-After: no call to this GitHub until then, from any process
                until = time.time() + exc.retry_after
                self.store.remember_fact(
                    api_host(github.api_url), RETRY_NOT_BEFORE, f"{until:.0f}", exc.github_message
                )
            retry = exc.network or exc.rate_limited or exc.status in (500, 502, 503, 504)
            if retry:
                return self._queue(job, "pull_request", exc)
            return self._fail(job, "pull_request", exc)
        pull = pulls[0]
        self.store.update_job(
            job,
            state="pr_opened",
            pr_number=int(pull["number"]),
            pr_url=str(pull.get("html_url") or ""),
            pr_reused=reused,
        )
        verb = "reused" if reused else "opened"
        note = self._notes.get(job.id or 0, "")
        self._say(
            "pull_request",
            "done",
            f"{verb} #{job.pr_number} {job.pr_url}" + (f" ({note})" if note else ""),
        )
        _checkpoint("pr_opened")
        return None

    def _rate_limit_wait(self, github: GitHubRepo) -> GitHubError | None:
        """The rate limit still in force for this GitHub (from an earlier answer), or None.

        Why: GitHub's secondary rate limit names a ``Retry-After``; calling again before it
        (the next job of a batch, an impatient ``sync``) prolongs the block.
        """
        fact = self.store.fact(api_host(github.api_url), RETRY_NOT_BEFORE)
        try:
            until = float(fact[0]) if fact else 0.0
        except ValueError:
            return None
        if until <= time.time():
            return None
        left = until - time.time()
        when = time.strftime("%H:%M:%S", time.localtime(until))
        assert fact is not None
        return GitHubError(
            f"GitHub asked to retry after {left:.0f} s, at {when} ({fact[1]}): the pull request "
            "was not sent",
            title="GitHub rate limit",
            hint=f"`agent-tui sync` after {when} opens it",
            rate_limited=True,
            retry_after=left,
            network=False,
        )

    def _create_pull(
        self, client: GitHubClient, job: PublishJob, github: GitHubRepo, body: str, head: str
    ) -> dict[str, Any]:
        """Open the pull request; as ready for review when GitHub refuses a draft here.

        Why: GitHub answers 422 "Draft pull requests are not supported in this repository."
        for private repositories on its free plans, while ``[publish] draft`` defaults to
        true. Failing there would leave a pushed branch without a pull request, and a retry
        would send the same draft again.
        """

        def create() -> dict[str, Any]:
            return client.create_pull(
                title=job.pr_title,
                body=body,
                base=job.base,
                head=head,
                draft=job.draft,
                head_repo=job.head_repo,
            )

        try:
            return create()
        except GitHubError as exc:
            if not (job.draft and exc.status == 422 and drafts_refused(exc.github_message)):
                raise
            self.store.remember_fact(github.key, DRAFTS_UNSUPPORTED, "1", detail=exc.github_message)
            self._ready_instead_of_draft(job, github)
        return create()

    def _ready_instead_of_draft(self, job: PublishJob, github: GitHubRepo) -> None:
        note = (
            f"opened ready for review: GitHub does not support draft pull requests in "
            f"{github.full_name}"
        )
        self.store.update_job(job, draft=False)
        self._notes[job.id or 0] = note
        self._say("pull_request", "started", note)

    def _labels(self, job: PublishJob) -> PublishResult | None:
        if not job.labels or job.pr_number is None:
            self.store.update_job(job, state="done")
            return None
        github = self._github(job)
        assert github is not None
        self._say("labels", "started", ", ".join(job.labels))
        try:
            GitHubClient(github, self._token(github)).add_labels(job.pr_number, job.labels)
        except GitHubError as exc:
            if exc.network:
                return self._queue(job, "labels", exc)
            # labels are a nicety: GitHub's refusal is reported, the PR stays published
            self._say("labels", "failed", exc.message)
        else:
            self._say("labels", "done", ", ".join(job.labels))
        self.store.update_job(job, state="done")
        return None


def drafts_refused(github_message: str) -> bool:
    """Whether GitHub's 422 says this repository does not support draft pull requests."""
    text = github_message.lower()
    return "draft pull request" in text and "not supported" in text


def _test_text(run: gitops.TestRun) -> str:
    """The test result as Markdown for the job and, when asked, the PR body."""
    text = f"**Tests:** {run.summary()}"
    if run.output.strip():
        tail = "\n".join(run.output.strip().splitlines()[-30:])
        text += f"\n\n<details><summary>output</summary>\n\n```\n{tail}\n```\n</details>"
    return text


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
    "CHECKPOINTS",
    "DRAFTS_UNSUPPORTED",
    "KILL_AT_ENV",
    "BranchChoice",
    "ProgressCallback",
    "Provenance",
    "PublishPlan",
    "PublishProgress",
    "PublishResult",
    "build_plan",
    "commit_message",
    "drafts_refused",
    "ensure_closes",
    "execute",
    "model_ref_for",
    "outbox",
    "plan_with_choice",
    "provenance_from_history",
    "publish_lock",
    "sync",
]
