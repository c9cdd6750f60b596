"""The publish plan (modal): what will be pushed where, confirmed only with a distinct key.

Publishing is the one outward action, so it is never one keystroke away from a stray Enter:
the plan is built in a worker without changing anything, warnings must be acknowledged
(``a``), and only the ``confirm_publish`` binding (``ctrl+y`` by default; a keymap cannot put
it on Enter, Space or a plain character) starts it. Progress is shown per step (commit,
tests, push, pull request), then the PR URL, or the outbox entry when offline.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.reactive import var
from textual.widgets import Footer, Static

from engine.flow.issue_run import IssueRun
from tui.keymap import CONFIRM_PUBLISH_ID, DEFAULT_CONFIRM_KEY, confirm_key
from tui.messages import PublishQueued, PublishStepped, PullRequestOpened, WorkerFailed
from tui.screens.base import AgentModal

STEP_MARKS = {"started": "…", "done": "✓", "failed": "✗", "skipped": "-", "queued": "⏸"}
STEP_STYLES = {"done": "green", "failed": "bold red", "queued": "yellow"}


class PlanState(StrEnum):
    """Where the publish plan stands; it decides the text under the plan and the keys."""

    PLANNING = "planning"
    READY = "ready"
    """Planned and publishable (after acknowledging any warnings)."""
    BLOCKED = "blocked"
    """Planned with errors: nothing can be published."""
    PUBLISHING = "publishing"
    DONE = "done"
    """The pull request was opened (or reused)."""
    QUEUED = "queued"
    """Pushed, the pull request waits in the outbox."""
    FAILED = "failed"


def result_words(result: Any) -> tuple[str, str]:
    """(title, what happened and what to do) of a publish result, in the user's words."""
    if getattr(result, "published", False):
        verb = "reused" if getattr(result, "pr_reused", False) else "opened"
        return f"Pull request {verb}", str(result.pr_url or "")
    if getattr(result, "queued", False):
        reason = str(result.message).removeprefix("queued in the outbox: ")
        hint = getattr(result, "hint", "") or "wait until GitHub can be reached"
        return "Queued in the outbox", (
            f"{reason}. The branch {result.branch} is kept; {hint}, then `agent-tui sync` "
            "opens the pull request."
        )
    return "Not published", str(getattr(result, "message", ""))


def render_plan(plan: Any, run: IssueRun, acknowledged: bool) -> RenderableType:
    """The plan's facts, warnings and errors."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(name: str, value: str) -> None:
        grid.add_row(name, Text(value))  # Text: no markup in user data

    where = plan.github.full_name if plan.github else "no GitHub: the PR is queued in the outbox"
    row("issue", f"#{plan.issue} {run.issue.title}")
    row("branch", plan.branch + ("  (update: commit on top)" if plan.update_existing else ""))
    row("base", f"{plan.base}   remote {plan.remote}")
    row("pull request", f"{where} · {'draft' if plan.draft else 'ready for review'}")
    row("title", plan.title)
    row("labels", ", ".join(plan.labels) or "-")
    row("closes", f"#{plan.issue}")
    row("files", ", ".join(f.path for f in plan.proposal.files))
    tests = plan.test_command or "none configured ([publish] test_command)"
    row("tests", tests + ("  (run before the push)" if plan.test_command else ""))
    row("token", plan.token_source or "none")
    parts: list[RenderableType] = [Text("Publish plan", style="bold")]
    if plan.errors:  # first: on a small terminal what blocks must be seen without scrolling
        parts.append(Text("Cannot publish:", style="bold red"))
        parts += [Text(f"✗ {e}") for e in plan.errors]
        if plan.branch_conflict:
            parts.append(Text("n: publish on a new branch · u: update the existing one", "dim"))
        parts.append(Text(""))
    parts.append(grid)
    review = run.review
    warnings = [f"{f.code}: {f.message}" for f in (review.warnings if review else [])]
    warnings += list(plan.warnings)
    if warnings:
        state = "acknowledged" if acknowledged else "press a to acknowledge them"
        parts.append(Text(f"Warnings ({state})", style="bold yellow"))
        parts += [Text(f"! {w}") for w in warnings]
    return Group(*parts)


class PublishPlanScreen(AgentModal):
    """Returns the engine's ``PublishResult`` once published or queued, else None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(DEFAULT_CONFIRM_KEY, "confirm_publish", "Publish (confirm)", id=CONFIRM_PUBLISH_ID),
        Binding("a", "acknowledge", "Acknowledge warnings", id="acknowledge"),
        Binding("D", "toggle_draft", "Draft on/off", id="toggle_draft"),
        Binding("n", "branch_choice('new')", "New branch", id="new_branch"),
        Binding("u", "branch_choice('update')", "Update branch", id="update_branch"),
        Binding("o", "open_pr", "Open PR in browser", id="open_pr"),
        Binding("escape", "close", "Close", id="close_plan"),
    ]

    DEFAULT_CSS = """
    PublishPlanScreen { align: center middle; }
    PublishPlanScreen > #plan-box {
        width: 96%; max-width: 110; height: 92%;
        border: thick $warning; background: $surface; padding: 0 1;
    }
    PublishPlanScreen #plan-body { height: 1fr; }
    PublishPlanScreen #plan-confirm { height: auto; margin-top: 1; text-style: bold; }
    """

    state: var[PlanState] = var(PlanState.PLANNING, always_update=True, bindings=True, init=False)
    """Setting it shows the state and refreshes the keys (each time: a new plan may keep
    the state)."""

    def __init__(self, run: IssueRun, *, auto_plan: bool = True) -> None:
        super().__init__()
        self.run = run
        self.auto_plan = auto_plan
        self.plan: Any = None
        self.steps: list[tuple[str, str, str]] = []
        self.result: Any = None
        self.draft: bool | None = None
        self.on_existing: str | None = None
        self.cancel = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(id="plan-box"):
            with VerticalScroll(id="plan-body"):
                yield Static(Text("building the plan…", style="dim"), id="plan-text")
                yield Static("", id="plan-steps")
            yield Static("", id="plan-confirm")
        yield Footer()

    def on_mount(self) -> None:
        if self.auto_plan:
            self.build()

    @property
    def acknowledged(self) -> bool:
        review = self.run.review
        return bool(review and review.acknowledged)

    # -- planning --------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def build(self) -> None:
        plan = self.run.plan_publish(draft=self.draft, on_existing=self.on_existing)
        self.app.call_from_thread(self.show_plan, plan)

    def show_plan(self, plan: Any) -> None:
        """Show a built plan (``ready`` or ``blocked``)."""
        self.plan = plan
        self.state = PlanState.READY if plan.ready else PlanState.BLOCKED

    def _needs_ack(self) -> bool:
        review = self.run.review
        has_warnings = bool(review and review.warnings) or bool(self.plan and self.plan.warnings)
        return has_warnings and not self.acknowledged

    def watch_state(self) -> None:
        self._refresh_view()

    def _refresh_view(self) -> None:
        if self.plan is not None:
            self.query_one("#plan-text", Static).update(
                render_plan(self.plan, self.run, self.acknowledged)
            )
        if self.steps:
            rows = [Text("Progress", style="bold")]
            for step, state, detail in self.steps:
                line = Text(f"{STEP_MARKS.get(state, '?')} ", style=STEP_STYLES.get(state, ""))
                line.append(f"{step.replace('_', ' '):<13}")
                if detail:
                    line.append(detail, style="dim")
                rows.append(line)
            self.query_one("#plan-steps", Static).update(Group(*rows))
        key = self.app.get_key_display(self._confirm_binding())
        confirm = self.query_one("#plan-confirm", Static)
        if self.state == PlanState.READY:
            if self._needs_ack():
                text = f"Acknowledge the warnings (a), then press {key} to publish."
            else:
                text = f"Press {key} to publish. Enter, Space or any other key does not."
        elif self.state == PlanState.BLOCKED:
            text = "Nothing can be published until the errors above are resolved (Esc: back)."
        elif self.state == PlanState.PUBLISHING:
            text = "Publishing… (Esc stops before the push)"
        elif self.state == PlanState.DONE:
            title, words = result_words(self.result)
            text = f"{title}: {words}  (o opens it in the browser · Esc closes)"
        elif self.state in (PlanState.QUEUED, PlanState.FAILED):
            title, words = result_words(self.result)
            text = f"{title}: {words}"
        else:
            text = "building the plan…"
        confirm.update(Text(text))

    def _confirm_binding(self) -> Binding:
        key = confirm_key(self.agent_app.keymap)
        return Binding(key, "confirm_publish", "Publish")

    # -- publishing ------------------------------------------------------------------------
    def action_confirm_publish(self) -> None:
        if self.state != PlanState.READY or self.plan is None:
            self.notify("nothing to publish in this state", severity="warning")
            return
        if self._needs_ack():
            self.notify("acknowledge the warnings first (a)", severity="warning")
            return
        self.steps = []
        self.state = PlanState.PUBLISHING
        self.publish()

    @work(thread=True, exclusive=True, exit_on_error=False, group="publish")
    def publish(self) -> None:
        def progress(p: Any) -> None:
            self.post_message(PublishStepped(p.step, p.state, p.detail))

        result = self.run.publish(self.plan, progress=progress, cancel=self.cancel)
        if result.published:
            self.post_message(PullRequestOpened(result.pr_url or "", result))
        elif result.queued:
            self.post_message(PublishQueued(result.message, result))
        else:
            self.post_message(PublishQueued(result.message, result))

    def on_publish_stepped(self, message: PublishStepped) -> None:
        for index, (step, _state, _detail) in enumerate(self.steps):
            if step == message.step:
                self.steps[index] = (message.step, message.state, message.detail)
                break
        else:
            self.steps.append((message.step, message.state, message.detail))
        self._refresh_view()

    def on_pull_request_opened(self, message: PullRequestOpened) -> None:
        self.result = message.outcome
        self.state = PlanState.DONE

    def on_publish_queued(self, message: PublishQueued) -> None:
        self.result = message.outcome
        self.state = PlanState.QUEUED if getattr(self.result, "queued", False) else PlanState.FAILED
        error = getattr(self.result, "error", None)
        if self.state == PlanState.FAILED and error is not None:
            self.post_message(WorkerFailed(error))

    def on_worker_error(self, worker: Any) -> None:
        if worker.group in ("plan", "publish"):
            self.state = PlanState.FAILED if worker.group == "publish" else PlanState.BLOCKED

    # -- other actions ---------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "confirm_publish":
            return self.state == PlanState.READY
        if action == "acknowledge":
            return self.state == PlanState.READY and self._needs_ack()
        if action in ("toggle_draft",):
            return self.state in (PlanState.READY, PlanState.BLOCKED)
        if action == "branch_choice":
            return self.state == PlanState.BLOCKED and bool(self.plan and self.plan.branch_conflict)
        if action == "open_pr":
            return self.state == PlanState.DONE
        return True

    def action_acknowledge(self) -> None:
        if self.state == PlanState.READY:
            self.run.acknowledge(True)
            self._refresh_view()
            self.refresh_bindings()

    def action_toggle_draft(self) -> None:
        if self.plan is None:
            return
        self.draft = not self.plan.draft
        self.state = PlanState.PLANNING
        self.build()

    def action_branch_choice(self, choice: str) -> None:
        self.on_existing = choice
        self.state = PlanState.PLANNING
        self.build()

    def action_open_pr(self) -> None:
        url = getattr(self.result, "pr_url", None)
        if url:
            self.app.open_url(url)

    def action_close(self) -> None:
        if self.state == PlanState.PUBLISHING:
            self.cancel.set()
            self.notify("stopping before the push…", timeout=3)
            return
        self.dismiss(self.result if self.state in (PlanState.DONE, PlanState.QUEUED) else None)
