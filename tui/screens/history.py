"""The History screen: every generation with its outcome, and the outbox of publish jobs."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from engine.textsafe import safe
from tui.messages import HistoryLoaded
from tui.screens.base import AgentScreen
from tui.widgets.status_bar import StatusBar


def _when(stamp: str) -> str:
    """``2024-05-01T10:00:00+00:00`` -> ``2024-05-01 10:00`` (UTC, as stored)."""
    return stamp[:16].replace("T", " ") if stamp else ""


class HistoryScreen(AgentScreen):
    """Generations (newest first) and pending publish jobs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "reload", "Reload", id="reload_history"),
        Binding("escape,q", "app.pop_screen", "Back", id="back_history"),
    ]

    def __init__(self, *, entries: list[Any] | None = None, jobs: list[Any] | None = None) -> None:
        super().__init__()
        self._entries = entries
        self._jobs = jobs

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("Generations", classes="section-title", id="history-title")
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield Static("Outbox", classes="section-title", id="outbox-title")
        yield DataTable(id="outbox", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left("agent-tui · History")
        self.app.refresh_badges()  # type: ignore[attr-defined]
        history = self.query_one("#history", DataTable)
        history.add_columns("#", "when (UTC)", "issue", "model", "prompt", "outcome", "detail")
        outbox = self.query_one("#outbox", DataTable)
        outbox.add_columns("job", "issue", "branch", "state", "status", "last error")
        if self._entries is not None:
            self.post_message(HistoryLoaded(self._entries, self._jobs or []))
        else:
            self.action_reload()

    @work(thread=True, exclusive=True, exit_on_error=False, group="history")
    def load(self) -> None:
        from engine.publish import outbox

        workspace = self.app.workspace  # type: ignore[attr-defined]
        store = workspace.store()
        entries = store.generations(limit=200) if store is not None else []
        jobs = outbox(workspace.repo) if store is not None else []
        self.post_message(HistoryLoaded(entries, jobs))

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        entries, jobs = message.entries, message.jobs
        history = self.query_one("#history", DataTable)
        history.clear()
        for e in entries:
            detail = e.pr_url or e.detail or ""
            issue = f"#{e.issue_number} {e.issue_title}" if e.issue_number else e.issue_title
            history.add_row(  # Text: titles, names and errors are never markup
                str(e.id),
                _when(e.created_at),
                Text(safe(issue)),
                Text(safe(e.model_profile)),
                Text(safe(e.prompt_profile)),
                e.outcome,
                Text(safe(detail)),
            )
        self.query_one("#history-title", Static).update(f"Generations ({len(entries)})")
        outbox = self.query_one("#outbox", DataTable)
        outbox.clear()
        for j in jobs:
            outbox.add_row(
                str(j.id),
                f"#{j.issue_number}",
                Text(safe(j.branch)),
                j.state,
                j.status,
                Text(safe(j.last_error)),
            )
        title = f"Outbox ({len(jobs)} pending or failed; `agent-tui sync` retries them)"
        self.query_one("#outbox-title", Static).update(title)
        history.focus()

    def action_reload(self) -> None:
        self.load()
