"""One issue's run, from prompt to checked proposal, then edits, fixes and publishing.

Cancellation is a ``threading.Event`` handed down to the backend, which stops within about
one token; a cancelled run writes nothing anywhere. The repository's shared state (models,
issue source, history) is ``engine.flow.session.Workspace``; the events a run yields are in
``engine.flow.run_events``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from engine.core.errors import PublishError
from engine.core.events import (
    Cancelled,
    Finished,
    GenerationEvent,
    GenerationFailed,
    GenerationStats,
    Looping,
    TokensGenerated,
    Truncated,
)
from engine.core.models import AnswerShape, ChangeProposal, FileChange, Issue, IssueComment
from engine.flow.run_events import (
    ContextReady,
    ModelLoading,
    ModelReady,
    Review,
    Reviewed,
    SessionEvent,
    retry_sampling,
)
from engine.generate.backends.base import Backend, GenerationRequest

# The context stage (builder, layout, prompt profiles), checks, diff and publisher are imported
# where they are first used, not here: the TUI imports this module before its first paint, and
# those imports add 208 ms there (fewest of 3 runs on this 2-core machine, up to ~500 ms under
# load) that the issue list does not need (tests/test_first_paint_imports.py lists what it may
# import).
if TYPE_CHECKING:
    from engine.context.prompts import PromptProfile
    from engine.context.result import ContextOptions, ContextResult
    from engine.flow.session import Workspace
    from engine.publish.plan import PublishPlan
    from engine.publish.provenance import Provenance
    from engine.publish.steps import ProgressCallback, PublishResult
    from engine.review.checks.registry import Finding


FEEDBACK_TEMPLATE = (
    "A reviewer read your previous answer (above) and asks for changes:\n\n{feedback}\n\n"
    "Answer again with one complete JSON object: every file complete, nothing left out."
)


def rebuild_proposal(data: dict[str, Any]) -> ChangeProposal:
    """A proposal from edited data: validated when it can be, else kept for the checks.

    An edit may leave the proposal invalid (every file dropped, a bad branch suffix); the
    checks then say what is wrong instead of the edit being refused and lost.
    """
    try:
        return ChangeProposal.model_validate(data)
    except ValidationError:
        files = [
            FileChange.model_construct(path=f.get("path", ""), content=f.get("content", ""))
            for f in data.get("files", [])
        ]
        return ChangeProposal.model_construct(**{**data, "files": files})


class IssueRun:
    """One issue's run: context -> messages -> generation -> proposal -> checks, then edits.

    Everything blocking (loading the model, building the context, generating, checking) is
    a plain method meant to be called from a worker thread; ``generate`` yields events as
    they happen. The run keeps the latest review, so edits, fixes and regeneration work on
    what the user sees.

    Args:
        workspace: the repository's workspace.
        issue: the issue to solve.
        comments: its comments when already known (else read from the source on demand).
    """

    def __init__(
        self, workspace: Workspace, issue: Issue, comments: list[IssueComment] | None = None
    ) -> None:
        self.workspace = workspace
        self.issue = issue
        self._comments = comments
        self.model_name = workspace.model_name
        self.prompt_name = workspace.prompt_name
        self._context: ContextResult | None = None
        self._context_key: tuple[str, str, int, ContextOptions | None] | None = None
        self._context_profile: PromptProfile | None = None
        """The prompt profile ``_context`` was built with."""
        self.review: Review | None = None
        self._context_lock = threading.Lock()
        self.last_raw: str = ""
        """The raw text of the last answer (kept for regeneration and failures)."""
        self.attempts: int = 0
        self.last_outcome: str | None = None
        """How the last attempt ended: ``loop``, ``truncated``, ``finished``, ``failed``."""
        self.retries: int = 0
        """Retries with a new seed so far (after loops or truncations)."""
        self.seed_used: int | None = None
        """The seed of the last attempt when a retry changed it."""
        self.max_tokens: int | None = None
        """Overrides the profile's answer budget (``generate --max-tokens``)."""
        self.context_options: ContextOptions | None = None
        """Overrides the context builder's knobs (``bench/answer_quality.py --no-outlines``)."""

    def continue_retries(self) -> None:
        """Make this run a retry when the issue's latest attempts looped or were truncated.

        Running ``generate`` (or a batch with ``--retry-failed``) again after a loop is the
        CLI's "try again": the history says how the last attempts of this model profile
        ended, so the run samples with a new seed instead of repeating the same greedy
        computation.
        """
        store = self.workspace.store()
        if store is None:
            return
        retries = 0
        reason: str | None = None
        for record in store.generations(limit=20, issue=self.issue.number):
            if record.model_profile != self.model_name or record.outcome != "failed":
                break
            kind = record.detail.split(":", 1)[0]
            if kind not in ("looping", "truncated"):
                break
            reason = reason or ("loop" if kind == "looping" else "truncated")
            retries += 1
        if reason is not None:
            self.last_outcome = reason
            self.retries = retries - 1

    # -- inputs ----------------------------------------------------------------------------
    @property
    def repo(self) -> Path:
        return self.workspace.repo

    def comments(self) -> list[IssueComment]:
        """The issue's comments (read once from the source; empty when it has none).

        Raises:
            AgentTuiError: the source failed (e.g. GitHub unreachable and nothing cached).
        """
        if self._comments is None:
            source = self.workspace.issue_source()
            self._comments = list(source.comments(self.issue.number)) if source.HAS_COMMENTS else []
        return self._comments

    def backend(self) -> Backend:
        """The active model's backend, loaded now if needed (blocking)."""
        return self.workspace.models.load(self.model_name)

    def build_context(self, *, extra_reserve: int = 0) -> ContextResult:
        """The prompt for this issue (cached while the model, profile and reserve are unchanged).

        Args:
            extra_reserve: tokens kept free beyond the answer's budget (the previous answer
                and the feedback of a regeneration).

        Returns:
            The messages with their token numbers, shown and left-out files.

        Raises:
            ModelLoadError, PromptProfileError, UnknownProfileError, ContextTooLargeError,
            RepoError: as the steps say.
        """
        with self._context_lock:  # the Issue screen and a generation may both ask at once
            return self._build_context(extra_reserve)

    def _build_context(self, extra_reserve: int) -> ContextResult:
        key = (
            self.model_name,
            self.prompt_name,
            extra_reserve + (self.max_tokens or 0),
            self.context_options,
        )
        if self._context is not None and self._context_key == key:
            return self._context
        from engine.context.build import build_context
        from engine.context.prompts import load_profile

        profile = self.workspace.config.profile(self.model_name)
        backend = self.backend()
        count_text = getattr(backend, "count_text", None)
        if not callable(count_text):

            def count_text(text: str) -> int:
                return backend.count_tokens([{"role": "user", "content": text}])

        prompt = load_profile(self.prompt_name, self.repo)
        context = build_context(
            self.repo,
            self.issue,
            prompt,
            count_messages=backend.count_tokens,
            count_text=count_text,
            n_ctx=profile.n_ctx,
            max_tokens=(self.max_tokens or profile.max_tokens) + extra_reserve,
            comments=self.comments(),
            examples=prompt.examples if profile.prompt_examples else (),
            options=self.context_options,
        )
        self._context, self._context_key = context, key
        self._context_profile = prompt
        return context

    def previous_answer(self) -> str:
        """The last answer as the model should see it again: the (edited) proposal's JSON,
        else the raw text of a failed attempt."""
        if self.review is not None:
            return json.dumps(self.review.proposal.model_dump(), ensure_ascii=False)
        return self.last_raw

    def messages(self, feedback: str | None = None) -> list[dict[str, str]]:
        """The chat messages to send; with ``feedback``, the previous answer and the feedback
        follow the original prompt as an assistant and a user message."""
        previous = self.previous_answer() if feedback else ""
        extra = 0
        follow: list[dict[str, str]] = []
        if feedback and previous:
            follow = [
                {"role": "assistant", "content": previous},
                {"role": "user", "content": FEEDBACK_TEMPLATE.format(feedback=feedback.strip())},
            ]
            backend = self.backend()
            extra = backend.count_tokens(follow) + 16
        context = self.build_context(extra_reserve=extra)
        return [*context.messages, *follow]

    def answer_shape(self) -> AnswerShape:
        """This generation's ``AnswerShape``: the prompt profile's PR body sections and the
        repository's directories (``[generation] path_scope``), plus the paths the issue
        names that do not exist yet. The sections come from the profile the prompt was built
        with, so the grammar asks for what the model was told."""
        from engine.context.layout import answer_shape

        context = self.build_context()
        assert self._context_profile is not None  # set with the context
        return answer_shape(
            self.repo,
            self._context_profile.body_sections,
            context.named_missing,
            self.workspace.config.generation.path_scope,
        )

    # -- generation ------------------------------------------------------------------------
    def generate(
        self, cancel: threading.Event, feedback: str | None = None
    ) -> Iterator[GenerationEvent | SessionEvent]:
        """Generate a proposal: yields ``ModelLoading``/``ModelReady`` (first use),
        ``ContextReady``, the backend's events, then ``Reviewed`` after a ``Finished``.

        Expected failures of the model come as ``GenerationFailed`` events (the partial
        proposal kept in ``last_raw``); configuration, model and repository errors raise.
        A set ``cancel`` ends the stream with ``Cancelled``; nothing is written anywhere.

        Args:
            cancel: set it to stop (within about one token).
            feedback: the reviewer's request for a regeneration (None: a first generation).

        Raises:
            AgentTuiError: the model, the prompt profile or the repository cannot be used.
        """
        models = self.workspace.models
        if not models.is_loaded(self.model_name):
            yield ModelLoading(self.model_name)
            backend = self.backend()
            yield ModelReady(self.model_name, models.load_seconds.get(self.model_name, 0.0))
        else:
            backend = self.backend()
        if cancel.is_set():
            yield Cancelled(message="cancelled before generation started", hint="")
            return
        messages = self.messages(feedback)
        assert self._context is not None  # built by messages()
        yield ContextReady(self._context)
        if cancel.is_set():
            yield Cancelled(message="cancelled before generation started", hint="")
            return
        profile = self.workspace.config.profile(self.model_name)
        retry = retry_sampling(
            self.workspace.config, self.model_name, self.last_outcome, self.retries
        )
        request = GenerationRequest(
            messages=messages,
            max_files=self.workspace.config.generation.max_files,
            max_tokens=self.max_tokens or profile.max_tokens,
            issue_number=self.issue.number,
            shape=self.answer_shape(),
            temperature=retry.temperature if retry else None,
            seed=retry.seed if retry else None,
        )
        if retry is not None:
            self.retries += 1
            yield retry
        self.seed_used = retry.seed if retry else None
        self.attempts += 1
        raw: list[str] = []
        for event in backend.generate(request, cancel):
            if isinstance(event, TokensGenerated):
                event.add_to(raw)
            if isinstance(event, GenerationFailed) and not isinstance(event, Cancelled):
                self.last_outcome = _outcome(event)
            if isinstance(event, Finished):
                self.last_outcome = "finished"
                self.last_raw = event.raw or "".join(raw)
                yield event
                review = self._review(event.proposal, stats=event.stats, messages=messages)
                self.review = review
                yield Reviewed(review)
                return
            if isinstance(event, GenerationFailed):
                self.last_raw = event.raw or "".join(raw)
                if not isinstance(event, Cancelled):
                    self._record_failure(event, messages)
                yield event
                return
            yield event

    # -- review ----------------------------------------------------------------------------
    def _review(
        self,
        proposal: ChangeProposal,
        *,
        stats: GenerationStats | None = None,
        messages: list[dict[str, str]] | None = None,
        generation_id: int | None = None,
    ) -> Review:
        from engine.context.prompts import load_profile
        from engine.review.checks.orchestrator import run_checks
        from engine.review.checks.registry import CheckLimits, enabled_for_profile
        from engine.review.diff import RepoBase, diff_proposal

        base = RepoBase(self.repo, "HEAD")
        shown = self._context.shown_files if self._context is not None else None
        findings = run_checks(
            proposal,
            self.repo,
            self.issue.number,
            shown_files=shown,
            base=base,
            limits=CheckLimits.from_config(self.workspace.config),
            enabled=enabled_for_profile(load_profile(self.prompt_name, self.repo).checks),
        )
        diff = diff_proposal(proposal, base=base)
        if messages is not None:
            generation_id = self._record(proposal, findings, stats, messages)
        return Review(proposal, findings, diff, stats, generation_id, base=base)

    def _model_ref(self) -> str:
        profile = self.workspace.config.profile(self.model_name)
        for attr in ("model_path", "model_package", "model"):
            value = getattr(profile, attr, None)
            if value:
                return str(value)
        return ""

    def _record(
        self,
        proposal: ChangeProposal,
        findings: list[Finding],
        stats: GenerationStats | None,
        messages: list[dict[str, str]],
    ) -> int | None:
        store = self.workspace.store()
        if store is None:
            return None
        prompt_hash = hashlib.sha256(json.dumps(messages).encode()).hexdigest()
        return store.record_generation(
            issue_number=self.issue.number,
            issue_title=self.issue.title,
            model_profile=self.model_name,
            model_ref=self._model_ref(),
            prompt_profile=self.prompt_name,
            prompt_hash=prompt_hash,
            seed=self._seed(),
            proposal=proposal.model_dump(),
            findings=findings,
            stats=_stats_dict(stats),
            outcome="generated",
        )

    def _record_failure(self, event: GenerationFailed, messages: list[dict[str, str]]) -> None:
        store = self.workspace.store()
        if store is None:
            return
        store.record_generation(
            issue_number=self.issue.number,
            issue_title=self.issue.title,
            model_profile=self.model_name,
            model_ref=self._model_ref(),
            prompt_profile=self.prompt_name,
            prompt_hash=hashlib.sha256(json.dumps(messages).encode()).hexdigest(),
            seed=self._seed(),
            proposal=None,
            stats=_stats_dict(event.stats),
            outcome="failed",
            detail=f"{event.kind}: {event.message}",
        )

    def _current(self) -> Review:
        if self.review is None:
            raise RuntimeError("no proposal yet: generate first")
        return self.review

    def _replace(self, proposal: ChangeProposal) -> Review:
        old = self._current()
        review = self._review(proposal, stats=old.stats, generation_id=old.generation_id)
        review.outcome, review.pr_url = old.outcome, old.pr_url
        self.review = review
        store = self.workspace.store()
        if review.generation_id is not None and store is not None and proposal != old.proposal:
            # saved as it is made: closing the app never loses an edit
            store.save_edit(review.generation_id, proposal.model_dump(warnings=False))
        return review

    def recheck(self) -> Review:
        """Run the checks and the diff again (the repository may have changed)."""
        return self._replace(self._current().proposal)

    def fix(self) -> Review:
        """Apply the checks' deterministic fixes, then check again."""
        from engine.review.checks.fixes import apply_fixes

        return self._replace(apply_fixes(self._current().proposal, self.issue.number))

    def edit(self, **fields: str) -> Review:
        """Change ``branch_suffix``, ``commit_message``, ``pr_title`` and/or ``pr_body``.

        Args:
            **fields: the new values (an invalid value is kept and reported by the checks).

        Returns:
            The new review.

        Raises:
            ValueError: a field that cannot be edited this way.
        """
        allowed = {"branch_suffix", "commit_message", "pr_title", "pr_body"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot edit {sorted(unknown)}")
        data = self._current().proposal.model_dump()
        data.update(fields)
        return self._replace(rebuild_proposal(data))

    def edit_file(self, path: str, content: str) -> Review:
        """Replace the content of the proposal's file ``path``.

        Args:
            path: a path of the proposal.
            content: its new complete content.

        Returns:
            The new review.

        Raises:
            KeyError: the proposal has no such file.
        """
        data = self._current().proposal.model_dump()
        for item in data["files"]:
            if item["path"] == path:
                item["content"] = content
                break
        else:
            raise KeyError(path)
        return self._replace(rebuild_proposal(data))

    def drop_file(self, path: str) -> Review:
        """Remove file ``path`` from the proposal (nothing on disk changes).

        Args:
            path: a path of the proposal.

        Returns:
            The new review (the checks report a proposal left without files).
        """
        data = self._current().proposal.model_dump()
        data["files"] = [f for f in data["files"] if f["path"] != path]
        return self._replace(rebuild_proposal(data))

    def restore_proposal(self, proposal: ChangeProposal) -> Review:
        """Put back an earlier version of the proposal (the Preview's undo), checked again."""
        return self._replace(proposal)

    def acknowledge(self, value: bool = True) -> None:
        """Record that the user read and accepts the warnings of the current review."""
        self._current().acknowledged = value

    # -- publishing ------------------------------------------------------------------------
    def provenance(self) -> Provenance:
        """Model, prompt and seed of the current proposal, for the commit trailers."""
        from engine.publish.provenance import Provenance, model_ref_for, provenance_from_history

        review = self.review
        store = self.workspace.store()
        if self._context is None and review is not None and review.generation_id is not None:
            # brought back from the history: the generation's own provenance
            if store is not None and store.generation(review.generation_id) is not None:
                return provenance_from_history(store, review.generation_id, self.workspace.config)
        config = self.workspace.config
        profile = config.profile(self.model_name)
        prompt_hash = ""
        if self._context is not None:
            prompt_hash = hashlib.sha256(json.dumps(self._context.messages).encode()).hexdigest()
        return Provenance(
            model_profile=self.model_name,
            model_ref=model_ref_for(profile, self.workspace.store()),
            prompt_profile=self.prompt_name,
            prompt_hash=prompt_hash,
            seed=self._seed(),
        )

    def _seed(self) -> int | None:
        """The seed of the current proposal: a retry's own, else the profile's."""
        if self.seed_used is not None:
            return self.seed_used
        return getattr(self.workspace.config.profile(self.model_name), "seed", None)

    def plan_publish(
        self, *, draft: bool | None = None, on_existing: str | None = None
    ) -> PublishPlan:
        """What publishing the current proposal would do (nothing is changed).

        Args:
            draft: open the PR as a draft (default: ``[publish] draft``).
            on_existing: ``new`` or ``update`` when the branch already exists.

        Raises:
            RepoError: not a git repository.
        """
        from engine.publish.plan import build_plan

        review = self._current()
        return build_plan(
            self.repo,
            self.workspace.config,
            review.proposal,
            self.issue.number,
            findings=review.findings,
            provenance=self.provenance(),
            generation_id=review.generation_id,
            draft=draft,
            labels=None,
            on_existing=on_existing,  # type: ignore[arg-type]
            issue_title=self.issue.title,
        )

    def publish(
        self,
        plan: PublishPlan,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> PublishResult:
        """Publish ``plan`` (built by ``plan_publish``) once its warnings were acknowledged.

        Raises:
            PublishError: warnings not acknowledged, error findings, or the plan's own errors.
        """
        from engine.publish.runner import execute

        review = self._current()
        if (review.warnings or plan.warnings) and not review.acknowledged:
            count = len(review.warnings) + len(plan.warnings)
            raise PublishError(
                f"{count} warning(s) were not acknowledged",
                hint="read the warnings in the publish plan and acknowledge them first",
            )
        return execute(plan, progress, cancel)

    def discard(self) -> None:
        """Mark the current generation as discarded in the history (left unpublished).

        Only a generation still ``generated`` changes: one that was published or queued
        meanwhile keeps its outcome.
        """
        review = self.review
        store = self.workspace.store()
        if review is not None and review.generation_id is not None and store is not None:
            store.set_outcome(review.generation_id, "discarded", only_if="generated")


def _outcome(event: GenerationFailed) -> str:
    """``loop``, ``truncated`` or ``failed``: what a retry needs to know of a failure."""
    if isinstance(event, Looping):
        return "loop"
    if isinstance(event, Truncated):
        return "truncated"
    return "failed"


def _stats_dict(stats: GenerationStats | None) -> dict[str, Any]:
    if stats is None:
        return {}
    return {k: getattr(stats, k) for k in stats.__dataclass_fields__}


__all__ = [
    "FEEDBACK_TEMPLATE",
    "IssueRun",
    "rebuild_proposal",
]
