"""Publishing a plan: steps that never lose anything.

Why an outbox: ``execute`` stores a publish job (``engine.publish.store``) before it acts, then
walks its state machine ``planned -> committed -> pushed -> pr_opened -> done``, recording each
step after it happened. Every step is idempotent and checks the world before acting (the branch
ref is compare-and-swapped, a push of the same commit is a no-op, an open pull request for the
head is looked up before one is created), so a job interrupted anywhere (network down,
GitHub failing, the process killed) is resumed by :func:`sync` without duplicates. A network
failure leaves the job ``pending`` (exit status 8 in the CLI); a refusal by git or GitHub
leaves it ``failed`` with their own message; either way the commit stays on its branch.

The plan it executes comes from ``engine.publish.plan``. The user's checkout is never touched:
the commit is built in a temporary worktree inside the git directory
(``engine.publish.gitops``), and the token only ever lives in one git process's environment and
the API client's headers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from engine.core import gitcmd
from engine.core.config import AppConfig
from engine.core.errors import PublishError
from engine.issues.forge.github import resolve_repo
from engine.publish import gitops
from engine.publish.plan import PublishPlan, key_envs
from engine.publish.records import PublishJob
from engine.publish.steps import JobRunner, ProgressCallback, PublishResult, checkpoint
from engine.publish.store import Store


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
        generation_id = _history_entry(store, plan)
        parent = None
        if plan.update_existing:
            parent = gitops.branch_sha(repo, plan.branch) or gitops.remote_branch_sha(
                repo, plan.remote, plan.branch
            )
        job = store.add_job(_job_for(plan, parent, generation_id))
        store.set_outcome(generation_id, "queued", detail="publishing", job_id=job.id)
        checkpoint("planned")
        return JobRunner(store, repo, progress, cancel, plan.key_envs).run(job)


def _history_entry(store: Store, plan: PublishPlan) -> int:
    """The plan's generation in the history (recorded now when it has none), as published."""
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
    return generation_id


def _job_for(plan: PublishPlan, parent: str | None, generation_id: int) -> PublishJob:
    """The outbox job that carries out ``plan`` (``parent``: the tip of a branch to update)."""
    return PublishJob(
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
            results.append(JobRunner(store, repo, progress, None, keys).run(job))
    return results


def outbox(repo_dir: Path, *, include_done: bool = False) -> list[PublishJob]:
    """The jobs of the outbox (pending and failed; all with ``include_done``)."""
    store = Store.for_repo(gitcmd.toplevel(repo_dir))
    if include_done:
        return store.jobs()
    return store.jobs(statuses=["pending", "failed"])


__all__ = [
    "execute",
    "outbox",
    "publish_lock",
    "sync",
]
