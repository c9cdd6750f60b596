"""The Issue screen: the issue as Markdown with its comments, and what the model will be shown.

Opening an issue builds its context in the background (loading the model the first time,
since tokens are counted with the model's own tokenizer), so the user sees the token budget,
the files shown and what was left out before pressing ``g``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import var
from textual.widgets import Footer, Markdown, Static

from engine.core.errors import AgentTuiError
from engine.core.models import Issue, IssueComment
from engine.core.textsafe import safe
from engine.flow.issue_run import IssueRun
from tui.messages import (
    ContextBuilt,
    IssueCommentsLoaded,
    ModelLoaded,
    ModelLoadStarted,
    ProposalRestored,
)
from tui.screens.base import AgentScreen
from tui.widgets.context_panel import ContextPanel
from tui.widgets.status_bar import StatusBar


def _comments_markdown(comments: list[IssueComment]) -> str:
    parts = []
    for c in comments:
        when = f" · {c.created_at:%Y-%m-%d}" if c.created_at else ""
        parts.append(f"**{c.author}**{when}\n\n{c.body}")
    return "\n\n---\n\n".join(parts)


class IssueScreen(AgentScreen):
    """One issue, ready to generate."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "generate", "Generate", id="generate"),
        Binding("c", "build_context", "Rebuild context", id="build_context"),
        Binding("v", "view_proposal", "Last proposal", id="view_proposal"),
        Binding("escape", "back", "Back", id="back"),
    ]

    restored: var[IssueRun | None] = var(None, bindings=True, init=False)
    """The issue's latest proposal brought back from the history (see ``restore``): setting
    it shows the proposal note and enables ``v``."""

    def __init__(self, issue: Issue, *, run: IssueRun | None = None, auto_context: bool = True):
        super().__init__()
        self.issue = issue
        self._run = run
        self.auto_context = auto_context
        self.context: Any = None

    @property
    def run(self) -> IssueRun:
        if self._run is None:
            self._run = self.agent_app.workspace.start(self.issue)
        return self._run

    def compose(self) -> ComposeResult:
        issue = self.issue
        yield StatusBar(id="status")
        head = Text.assemble((f"#{issue.number} ", "bold"), (safe(issue.title), "bold"))
        meta = [issue.source]
        if issue.updated_at:
            meta.append(f"updated {issue.updated_at:%Y-%m-%d}")
        if issue.comments:
            meta.append(f"{issue.comments} comments")
        if issue.labels:
            meta.append("labels: " + safe(", ".join(issue.labels)))
        head.append("\n" + " · ".join(meta), style="dim")
        yield Static(head, id="issue-head")
        yield Static("", id="issue-proposal")
        with Horizontal(id="issue-main"):
            with VerticalScroll(id="issue-body"):
                yield Markdown(issue.body or "_(no description)_", id="issue-markdown")
                yield Static("", id="comments-title", classes="section-title")
                yield Markdown("", id="issue-comments")
            yield ContextPanel(id="context-panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left(f"agent-tui · #{self.issue.number} {self.issue.title}")
        self.agent_app.refresh_badges()
        self._layout(self.size.width)
        panel = self.query_one(ContextPanel)
        panel.show_status("not built yet: press c")
        self.query_one("#issue-proposal").display = False
        if self.issue.comments:
            self.load_comments()
        if self._run is None:
            self.restore()
        if self.auto_context:
            self.action_build_context()

    def on_resize(self, event: events.Resize) -> None:
        self._layout(self.size.width)

    def _layout(self, width: int) -> None:
        self.set_class(0 < width < 110, "-narrow")

    # -- workers ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="comments")
    def load_comments(self) -> None:
        comments = self.run.comments()
        self.post_message(IssueCommentsLoaded(self.issue.number, comments))

    def on_issue_comments_loaded(self, message: IssueCommentsLoaded) -> None:
        if message.comments:
            self.query_one("#comments-title", Static).update(f"Comments ({len(message.comments)})")
            self.query_one("#issue-comments", Markdown).update(_comments_markdown(message.comments))

    @work(thread=True, exclusive=True, exit_on_error=False, group="restore")
    def restore(self) -> None:
        """Bring back the issue's latest proposal from the history (with the user's edits)."""
        run = self.agent_app.workspace.restore(self.issue)
        if run is not None:
            self.post_message(ProposalRestored(run))

    def on_proposal_restored(self, message: ProposalRestored) -> None:
        if self._run is not None and self._run.review is not None:
            return  # a proposal made meanwhile is newer
        self.restored = message.run

    def watch_restored(self) -> None:
        self.show_proposal_note()

    def show_proposal_note(self) -> None:
        """One line under the title: the issue's proposal and what to do with it."""
        run = self.proposal_run
        note = self.query_one("#issue-proposal", Static)
        review = run.review if run is not None else None
        if review is None:
            note.display = False
            return
        files = len(review.proposal.files)
        what = f"{files} file{'s' if files != 1 else ''}"
        if review.outcome == "published":
            state = f"published: {review.pr_url}" if review.pr_url else "published"
        elif review.outcome == "queued":
            state = "queued in the outbox (`agent-tui sync` sends it)"
        else:
            state = "not published yet"
        when = f", saved {review.saved_at[:16].replace('T', ' ')} UTC" if review.saved_at else ""
        note.update(
            Text.assemble(
                ("Proposal ", "bold"),
                (f"({what}{when}) {state}", ""),
                ("  v opens it · g generates a new one", "dim"),
            )
        )
        note.display = True

    @property
    def proposal_run(self) -> IssueRun | None:
        """The run whose proposal ``v`` opens: this visit's, else the one from the history."""
        if self._run is not None and self._run.review is not None:
            return self._run
        return self.restored

    @work(thread=True, exclusive=True, exit_on_error=False, group="context")
    def build_context(self) -> None:
        run = self.run
        models = run.workspace.models
        if not models.is_loaded(run.model_name):
            self.app.post_message(ModelLoadStarted(run.model_name))
            run.backend()
            self.app.post_message(
                ModelLoaded(run.model_name, models.load_seconds.get(run.model_name, 0.0))
            )
        try:
            context = run.build_context()
        except AgentTuiError as exc:
            self.post_message(ContextBuilt(self.issue.number, exc))
            raise
        self.post_message(ContextBuilt(self.issue.number, context))

    def on_context_built(self, message: ContextBuilt) -> None:
        panel = self.query_one(ContextPanel)
        if isinstance(message.context, AgentTuiError):
            panel.show_status(f"failed: {message.context.message}")
            return
        self.context = message.context
        panel.show_context(message.context, self.run.model_name, self.run.prompt_name)

    # -- actions ---------------------------------------------------------------------------
    def action_build_context(self) -> None:
        run = self.run
        loaded = run.workspace.models.is_loaded(run.model_name)
        self.query_one(ContextPanel).show_status(
            "building…" if loaded else f"loading model {run.model_name}…"
        )
        self.build_context()

    def action_generate(self) -> None:
        self.agent_app.open_generating(self.run)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "view_proposal":
            return self.proposal_run is not None
        return True

    def on_screen_resume(self) -> None:
        run = self._run
        workspace = self.agent_app.workspace
        if (
            run is not None
            and run.review is None
            and (run.model_name != workspace.model_name or run.prompt_name != workspace.prompt_name)
        ):
            # the active model or prompt profile changed (Models screen): start afresh
            self._run = None
            self.context = None
            if self.auto_context:
                self.action_build_context()
        self.show_proposal_note()
        self.refresh_bindings()

    def action_view_proposal(self) -> None:
        run = self.proposal_run
        if run is not None:
            self.agent_app.open_preview(run)

    def action_back(self) -> None:
        self.app.pop_screen()
