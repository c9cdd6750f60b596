"""The steps of one outbox job: commit, push, pull request, labels, each recorded after it happened.

Why its own module: ``engine.publish.runner`` decides *when* a job runs (a new publish, or a
retry by ``sync``, under the repository's publish lock); this module is *what* each step does
and how it ends (``done``, queued in the outbox on a network failure, ``failed`` on a refusal,
``cancelled``). Every step checks the world before acting, so a job resumed at its recorded
state never duplicates a commit, a push or a pull request.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from engine.core.errors import AgentTuiError, GitHubError, PublishError, RepoError
from engine.issues.forge.github import GitHubClient, GitHubRepo, api_host, parse_remote_url
from engine.issues.forge.github_token import Token, is_loopback, resolve_token
from engine.publish import gitops
from engine.publish.plan import DRAFTS_UNSUPPORTED
from engine.publish.records import PublishJob
from engine.publish.store import Store

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
#: the ``forge_facts`` key (per API host) holding when GitHub's rate limit lets us call again
RETRY_NOT_BEFORE = "retry_not_before"

Step = Literal["prepare", "fetch", "test", "commit", "branch", "push", "pull_request", "labels"]


@dataclass(frozen=True)
class PublishProgress:
    """One publish step started, finished, failed or was skipped (for the TUI and the CLI)."""

    step: str
    state: Literal["started", "done", "failed", "skipped", "queued"]
    """``queued``: the step waits in the outbox (expected offline or without GitHub)."""
    detail: str = ""


ProgressCallback = Callable[[PublishProgress], None]


def checkpoint(name: str) -> None:
    """Die here when the test hook names this checkpoint (proves crash safety in tests)."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


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


class JobRunner:
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
            checkpoint("commit_created")
            self.store.update_job(
                job, state="committed", head_sha=sha, parent_sha=parent, base_sha=base_sha
            )
            self._say("commit", "done", sha[:12])
            checkpoint("committed")
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
        checkpoint("push_done")
        self.store.update_job(job, state="pushed")
        self._say("push", "done", job.branch)
        checkpoint("pushed")
        return None

    def _pull_request(self, job: PublishJob) -> PublishResult | None:
        github = self._github(job)
        waiting = self._not_now(github)
        if waiting is not None:
            return self._queue(job, "pull_request", waiting)
        assert github is not None  # without one, _not_now says why it waits
        client = GitHubClient(github, self._token(github))
        owner = job.head_owner or github.owner
        head = f"{owner}:{job.branch}" if owner != github.owner else job.branch
        self._say("pull_request", "started", f"{job.head_repo or head} -> {job.base}")
        try:
            pull, reused = self._open_or_reuse(client, job, github, owner, head)
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
        checkpoint("pr_opened")
        return None

    def _not_now(self, github: GitHubRepo | None) -> AgentTuiError | None:
        """Why the pull request waits in the outbox (no GitHub, no token, a rate limit)."""
        if github is None:
            return _pr_queued(
                "no GitHub repository is known for this remote",
                "set [github] repo (and api_url) in the config",
            )
        if self._token(github) is None:
            return _pr_queued(
                "no GitHub token to open the pull request",
                "export GH_TOKEN (or run `gh auth login`)",
            )
        return self._rate_limit_wait(github)

    def _open_or_reuse(
        self, client: GitHubClient, job: PublishJob, github: GitHubRepo, owner: str, head: str
    ) -> tuple[dict[str, Any], bool]:
        """The job's pull request: the open one for its head, else a new one (and reused?).

        Raises:
            GitHubError: GitHub refused or could not be reached.
        """
        pulls = client.open_pulls_for_head(owner, job.branch, head_repo=job.head_repo)
        if pulls:
            return pulls[0], True
        body = job.pr_body
        if job.tests_in_body and job.test_summary:
            body = body.rstrip() + "\n\n---\n" + job.test_summary
        if job.draft and self.store.fact(github.key, DRAFTS_UNSUPPORTED):
            self._ready_instead_of_draft(job, github)
        try:
            created, reused = self._create_pull(client, job, github, body, head), False
        except GitHubError as exc:
            if exc.status != 422 or "already exists" not in exc.github_message:
                raise
            pulls = client.open_pulls_for_head(owner, job.branch, head_repo=job.head_repo)
            if not pulls:
                raise
            created, reused = pulls[0], True
        checkpoint("pr_created")
        return created, reused

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


def _pr_queued(message: str, hint: str) -> PublishError:
    """Why a pull request waits in the outbox until the configuration allows it."""
    return PublishError(message, title="Pull request queued", hint=hint)


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


__all__ = [
    "CHECKPOINTS",
    "KILL_AT_ENV",
    "RETRY_NOT_BEFORE",
    "JobRunner",
    "ProgressCallback",
    "PublishProgress",
    "PublishResult",
    "drafts_refused",
]
