"""Many issues in one run: generate a proposal for each, optionally publish each as a draft PR.

Why a batch mode: teams want "draft PRs for every ``good-first-issue``" overnight on a GPU
server, not one click per issue. The batch drives the same steps as the TUI and
``generate ISSUE`` (``engine.flow.issue_run``: context -> generation -> checks -> history) and the
same publisher (``engine.publish``: plan -> outbox job -> commit, push, PR), so a batch's
proposals and pull requests are exactly what a user would get by hand.

Concurrency: a server backend that declares ``CONCURRENT`` (OpenAI-compatible, Ollama) runs up
to K generations at once in threads, K bounded by the profile's ``concurrency`` (the backend's
own per-server semaphore enforces the same bound). llama.cpp in-process runs one at a time,
in issue order; the backend reuses the KV cache of the shared prompt prefix (system prompt,
file tree, files) from one issue to the next. Publishing is one job at a time per repository
(the publisher's lock), overlapping with the other generations.

Resumable and idempotent: the batch and each item's state live in the history database
(``engine.publish.store``), every change committed as it happens. Running the same batch again (same
selection, model, prompt profile and publish mode) continues it: items already generated are
not generated again (their proposal is read back from the history), a publish interrupted
mid-way is finished through its outbox job (``engine.publish.runner.sync``), which never opens a
second pull request for a branch. A complete batch run again does nothing, except that a
label batch takes in the issues labelled since (so a nightly job only does the new ones);
``fresh`` starts over. A lock file makes sure two processes never run the same batch.

Item states::

    pending -> generating -> generated -> publishing -> published
                          \\-> failed     \\-> blocked  \\-> queued | publish_failed

``generating`` and ``publishing`` are only seen after a crash; a resumed batch redoes the
generation (nothing was recorded) or finishes the publish job.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from engine.core import gitcmd
from engine.core.errors import AgentTuiError, ConfigError
from engine.core.events import (
    Cancelled,
    Finished,
    GenerationFailed,
    ProposalUpdated,
    TokensGenerated,
)
from engine.core.models import ChangeProposal, Issue, IssueComment
from engine.flow.batch_items import (
    DONE_GENERATE_ONLY,
    DONE_PUBLISH,
    PUBLISH_MODES,
    BatchItem,
    BatchOptions,
    BatchProgress,
    BatchSummary,
    ItemState,
    ProgressCallback,
)
from engine.flow.run_events import Reviewed
from engine.flow.session import Workspace
from engine.generate.backends.base import Backend
from engine.publish.plan import build_plan
from engine.publish.provenance import provenance_from_history
from engine.publish.runner import execute, sync
from engine.publish.store import Store


class BatchBusyError(AgentTuiError):
    """Another process is running the same batch."""

    title = "Batch already running"


def effective_concurrency(backend: Backend, requested: int | None) -> tuple[int, str]:
    """How many generations run at once, and a note when the request was lowered.

    Args:
        backend: the model's backend (its ``CONCURRENT`` flag and profile decide).
        requested: ``--concurrency`` (None: the profile's bound, 1 when it has none).

    Returns:
        ``(K, note)``; the note is empty when K is what was asked for.
    """
    if not backend.CONCURRENT:
        note = ""
        if requested and requested > 1:
            note = (
                f"{backend.kind} runs one generation at a time in-process: concurrency 1 "
                "(the prompt prefix cache carries over from one issue to the next)"
            )
        return 1, note
    bound = getattr(backend.profile, "concurrency", None)
    if requested is None:
        return int(bound or 1), ""
    if bound is not None and requested > bound:
        return int(bound), (
            f"profile {backend.name!r} allows {bound} concurrent generations "
            f"(its concurrency setting): using {bound}"
        )
    return requested, ""


@contextlib.contextmanager
def _batch_lock(repo: Any, batch_id: int) -> Iterator[None]:
    """Hold the batch's lock file for the run (released by the OS if the process dies)."""
    path = gitcmd.state_dir(repo) / f"batch-{batch_id}.lock"
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            yield
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchBusyError(
                f"batch #{batch_id} is being run by another agent-tui process",
                hint="wait for it to finish (or stop it; a rerun then resumes the batch)",
            ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class BatchRunner:
    """Runs (or resumes) one batch in a workspace.

    Args:
        workspace: the repository's workspace (its config, issue source and model host).
        options: what to run.
        progress: called with what happens (from worker threads; keep it quick).
        cancel: set it to stop: running generations are cancelled (their items stay
            ``pending``), a publish in progress stops before its push.
    """

    def __init__(
        self,
        workspace: Workspace,
        options: BatchOptions,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.workspace = workspace
        self.options = options
        self.progress = progress or (lambda _p: None)
        self.cancel = cancel or threading.Event()
        config = workspace.config
        self.model = options.model or workspace.model_name or config.default_model
        self.prompt = options.prompt or workspace.prompt_name or config.default_prompt
        workspace.set_model(self.model)  # an unknown profile fails before anything starts
        workspace.prompt_name = self.prompt
        if options.publish not in PUBLISH_MODES:
            raise ConfigError(
                f"--publish must be one of {', '.join(PUBLISH_MODES)}, not {options.publish!r}"
            )
        self.store = Store.for_repo(workspace.repo)
        self._publish_lock = threading.Lock()
        self._issues: dict[int, Issue] = {}
        self._comments: dict[int, list[IssueComment]] = {}
        self.notes: list[str] = []

    # -- setup ---------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The batch's identity: selection, model and prompt profiles, publish mode."""
        return {
            "selector": self.options.selector(),
            "model": self.model,
            "prompt": self.prompt,
            "publish": self.options.publish,
        }

    def key(self) -> str:
        """A string equal for two runs of "the same batch"."""
        return json.dumps(self.settings(), sort_keys=True)

    def select(self) -> list[Issue]:
        """The issues the options name (a label selection refreshes a remote source first).

        Raises:
            IssueNotFoundError: a named issue does not exist.
            ConfigError: no issue matches the labels.
        """
        source = self.workspace.issue_source()
        if self.options.issues:
            return [source.get_issue(n) for n in dict.fromkeys(self.options.issues)]
        if source.REMOTE:
            try:
                result = source.refresh()
                if result.message:
                    self.notes.append(result.message)
            except AgentTuiError as exc:
                self.notes.append(f"could not refresh the issues ({exc.message}): using the cache")
        wanted = set(self.options.labels)
        chosen = sorted(
            (i for i in source.list_issues() if wanted <= set(i.labels)), key=lambda i: i.number
        )
        if not chosen:
            raise ConfigError(
                f"no open issue has the label(s) {', '.join(sorted(wanted))}",
                hint="`agent-tui issues` lists the open issues and their labels",
            )
        return chosen

    def _resumable(self) -> dict[str, Any] | None:
        """The latest batch with the same identity (finished or not), unless ``fresh``."""
        if self.options.fresh:
            return None
        batches = self.store.batches(key=self.key(), limit=1)
        return batches[0] if batches else None

    def _add_new_matches(self, batch_id: int) -> None:
        """A label batch run again takes in the issues that got the labels since."""
        if not self.options.labels:
            return
        known = {r["issue_number"] for r in self.store.batch_items(batch_id)}
        try:
            fresh = [i for i in self.select() if i.number not in known]
        except ConfigError:  # no open issue has the labels any more
            return
        if fresh:
            self.store.add_batch_items(batch_id, [(i.number, i.title) for i in fresh])
            self._issues.update({i.number: i for i in fresh})
            self.notes.append(
                f"{len(fresh)} issue(s) labelled since the last run added: "
                + ", ".join(f"#{i.number}" for i in fresh)
            )

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> BatchSummary:
        """Run the batch to its end (or until cancelled); resumes the same unfinished batch.

        Returns:
            The summary of every item.

        Raises:
            AgentTuiError: the model, the prompt profile, the issue source or the repository
                cannot be used (before any item starts); ``BatchBusyError`` when another
                process runs this batch.
        """
        t0 = time.monotonic()
        previous = self._resumable()
        if previous is not None:
            batch_id = int(previous["id"])
            resumed = True
            self._add_new_matches(batch_id)
        else:
            issues = self.select()
            batch_id = self.store.add_batch(
                self.key(), self.settings(), [(i.number, i.title) for i in issues]
            )
            self._issues = {i.number: i for i in issues}
            resumed = False
        with _batch_lock(self.workspace.repo, batch_id):
            self.store.set_batch_status(batch_id, "running")
            items = [BatchItem.from_row(r) for r in self.store.batch_items(batch_id)]
            goal = DONE_PUBLISH if self.options.publish == "draft" else DONE_GENERATE_ONLY
            for item in items:
                if self.options.retry_failed and item.state == ItemState.FAILED:
                    self._set(batch_id, item, state=ItemState.PENDING, detail="")
                item.done_before = item.state in goal
            backend = self.workspace.models.load(self.model)
            concurrency, note = effective_concurrency(backend, self.options.concurrency)
            if note:
                self.notes.append(note)
            self._finish_interrupted_publishes(batch_id, items)
            todo = [i for i in items if i.state not in goal]
            if resumed and not todo:
                self.notes.append(
                    f"batch #{batch_id} was already complete: nothing to do "
                    "(--fresh starts a new batch)"
                )
            self._prefetch(todo)
            verb = "resumed" if resumed else "started"
            self.progress(
                BatchProgress(
                    "note",
                    None,
                    message=f"batch #{batch_id} {verb}: {len(items)} issue(s), {len(todo)} to "
                    f"do, model {self.model}, prompt {self.prompt}, concurrency {concurrency}, "
                    f"publish {self.options.publish}",
                )
            )
            if concurrency == 1:
                for item in todo:
                    if self.cancel.is_set():
                        break
                    self._process(batch_id, item)
            else:
                self._run_pool(batch_id, todo, concurrency)
            interrupted = self.cancel.is_set() and any(i.state not in goal for i in items)
            complete = all(i.state in goal for i in items)
            self.store.set_batch_status(
                batch_id, "done" if complete else ("interrupted" if interrupted else "running")
            )
        return BatchSummary(
            batch_id=batch_id,
            resumed=resumed,
            concurrency=concurrency,
            publish=self.options.publish,
            model=self.model,
            prompt=self.prompt,
            items=items,
            seconds=time.monotonic() - t0,
            interrupted=interrupted,
            notes=self.notes,
        )

    def _run_pool(self, batch_id: int, todo: Sequence[BatchItem], concurrency: int) -> None:
        """K workers over the items, in order; stops handing out work once cancelled."""
        queue = list(todo)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="batch") as pool:
            running: set[Future[None]] = set()
            while queue or running:
                while queue and len(running) < concurrency and not self.cancel.is_set():
                    running.add(pool.submit(self._process, batch_id, queue.pop(0)))
                if not running:
                    break
                done, running = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # an unexpected exception ends the batch loudly
                if self.cancel.is_set():
                    queue.clear()

    def _prefetch(self, items: Sequence[BatchItem]) -> None:
        """Read every issue and its comments in this thread (sources are not thread-safe)."""
        source = self.workspace.issue_source()
        for item in items:
            if item.issue_number not in self._issues:
                self._issues[item.issue_number] = source.get_issue(item.issue_number)
            if source.HAS_COMMENTS and item.issue_number not in self._comments:
                self._comments[item.issue_number] = list(source.comments(item.issue_number))

    def _set(self, batch_id: int, item: BatchItem, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(item, key, value)
        self.store.update_batch_item(batch_id, item.issue_number, **changes)

    # -- one item ------------------------------------------------------------------------------

    def _process(self, batch_id: int, item: BatchItem) -> None:
        """Generate (unless done before) and publish (when asked) one issue."""
        try:
            started = time.monotonic()
            self.progress(BatchProgress("started", item.issue_number, item))
            if item.state in (ItemState.PENDING, ItemState.GENERATING):
                self._generate(batch_id, item)
            if (
                self.options.publish == "draft"
                and item.state == ItemState.GENERATED
                and not self.cancel.is_set()
            ):
                self._publish(batch_id, item)
            self._set(batch_id, item, seconds=item.seconds + time.monotonic() - started)
        except AgentTuiError as exc:
            # one issue's problem (its context, its publish) does not stop the others
            state = (
                ItemState.PUBLISH_FAILED if item.state == ItemState.PUBLISHING else ItemState.FAILED
            )
            self._set(batch_id, item, state=state, detail=exc.message)
        self.progress(BatchProgress("finished", item.issue_number, item))

    def _generate(self, batch_id: int, item: BatchItem) -> None:
        issue = self._issues[item.issue_number]
        self._set(batch_id, item, state=ItemState.GENERATING, attempts=item.attempts + 1, detail="")
        run = self.workspace.start(issue, self._comments.get(issue.number, []))
        if item.attempts > 1:  # generated again (--retry-failed): a loop is not retried greedily
            run.continue_retries()
        last = 0.0
        files = 0
        for event in run.generate(self.cancel):
            if isinstance(event, ProposalUpdated):
                listed = event.partial.get("files")
                files = len(listed) if isinstance(listed, list) else files
            elif isinstance(event, TokensGenerated) and time.monotonic() - last > 1.0:
                last = time.monotonic()
                self.progress(
                    BatchProgress(
                        "tokens",
                        issue.number,
                        item,
                        tokens=event.completion_tokens,
                        tokens_per_s=event.tokens_per_s,
                        files=files,
                    )
                )
            elif isinstance(event, Cancelled):
                self._set(batch_id, item, state=ItemState.PENDING, detail="cancelled; resumable")
                return
            elif isinstance(event, GenerationFailed):
                self._set(
                    batch_id,
                    item,
                    state=ItemState.FAILED,
                    tokens_per_s=event.stats.tokens_per_s,
                    detail=f"{event.kind}: {event.message}",
                )
                return
            elif isinstance(event, Finished):
                item.tokens_per_s = event.stats.tokens_per_s
            elif isinstance(event, Reviewed):
                review = event.review
                errors, warnings = len(review.errors), len(review.warnings)
                blocked = errors and self.options.publish == "draft"
                self._set(
                    batch_id,
                    item,
                    state=ItemState.BLOCKED if blocked else ItemState.GENERATED,
                    generation_id=review.generation_id,
                    errors=errors,
                    warnings=warnings,
                    tokens_per_s=item.tokens_per_s,
                    detail=(
                        f"{errors} error finding(s): {review.errors[0].message}" if errors else ""
                    ),
                )
                return
        if item.state == ItemState.GENERATING:  # the stream ended without a final event
            self._set(batch_id, item, state=ItemState.FAILED, detail="the generation ended early")

    def _publish(self, batch_id: int, item: BatchItem) -> None:
        """Open a draft PR for the item's recorded generation (one publish at a time)."""
        assert item.generation_id is not None
        record = self.store.generation(item.generation_id)
        if record is None or record.proposal is None:
            self._set(
                batch_id, item, state=ItemState.FAILED, detail="the generation is not in history"
            )
            return
        config = self.workspace.config
        proposal = ChangeProposal.model_validate(record.proposal)
        with self._publish_lock:
            plan = build_plan(
                self.workspace.repo,
                config,
                proposal,
                item.issue_number,
                findings=record.findings,
                provenance=provenance_from_history(self.store, item.generation_id, config),
                generation_id=item.generation_id,
                draft=True,
            )
            if not plan.ready:
                hint = ""
                if plan.branch_conflict:
                    hint = (
                        f" (publish it yourself: agent-tui publish --generation "
                        f"{item.generation_id} --new-branch or --update-branch)"
                    )
                self._set(
                    batch_id, item, state=ItemState.BLOCKED, detail="; ".join(plan.errors) + hint
                )
                return
            self._set(batch_id, item, state=ItemState.PUBLISHING)
            result = execute(plan, cancel=self.cancel)
        self._apply_result(batch_id, item, result)

    def _apply_result(self, batch_id: int, item: BatchItem, result: Any) -> None:
        state = {
            "done": ItemState.PUBLISHED,
            "pending": ItemState.QUEUED,
            "failed": ItemState.PUBLISH_FAILED,
            "cancelled": ItemState.GENERATED,  # stopped before the push: publish again on resume
        }.get(result.status, ItemState.PUBLISH_FAILED)
        detail = "" if state == ItemState.PUBLISHED else result.message
        if state == ItemState.QUEUED:
            detail += " (`agent-tui sync` or rerunning the batch retries it)"
        self._set(
            batch_id, item, state=state, job_id=result.job_id, pr_url=result.pr_url, detail=detail
        )

    def _finish_interrupted_publishes(self, batch_id: int, items: Sequence[BatchItem]) -> None:
        """Items left ``publishing`` (killed) or ``queued``: finish their outbox jobs.

        A job resumes at its recorded step and looks for an open pull request before
        opening one, so no pull request is ever opened twice. An item whose job was never
        created goes back to ``generated`` and is published from its recorded proposal.
        """
        if self.options.publish != "draft":
            return
        waiting: dict[int, BatchItem] = {}
        for item in items:
            if (
                item.state not in (ItemState.PUBLISHING, ItemState.QUEUED)
                or item.generation_id is None
            ):
                continue
            jobs = [j for j in self.store.jobs_for_generation(item.generation_id)]
            job = jobs[-1] if jobs else None
            if job is None or job.status == "cancelled":
                self._set(batch_id, item, state=ItemState.GENERATED)
                item.done_before = False
                continue
            if job.status == "done":
                self._set(
                    batch_id, item, state=ItemState.PUBLISHED, job_id=job.id, pr_url=job.pr_url
                )
                continue
            if job.status == "failed":
                self._set(batch_id, item, state=ItemState.PUBLISH_FAILED, job_id=job.id)
                continue
            assert job.id is not None
            waiting[job.id] = item
        if not waiting:
            return
        message = f"finishing {len(waiting)} interrupted publish job(s) through the outbox"
        self.progress(BatchProgress("note", None, message=message))
        for result in sync(self.workspace.repo, self.workspace.config, job_ids=set(waiting)):
            item = waiting[result.job_id]
            self._apply_result(batch_id, item, result)
            item.done_before = False


def run_batch(
    workspace: Workspace,
    options: BatchOptions,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> BatchSummary:
    """Run or resume a batch (see ``BatchRunner``).

    Args:
        workspace: the repository's workspace.
        options: the selection, publish mode, concurrency and profiles.
        progress: called with what happens (from worker threads).
        cancel: set it to stop; rerunning the same batch resumes it.

    Returns:
        The summary of every item.

    Raises:
        AgentTuiError: before any item starts (model, prompt profile, issue source,
            repository), or ``BatchBusyError`` when another process runs the batch.
    """
    return BatchRunner(workspace, options, progress=progress, cancel=cancel).run()


__all__ = [
    "BatchBusyError",
    "BatchRunner",
    "effective_concurrency",
    "run_batch",
]
