"""The History screen: every generation with its outcome, and the outbox of publish jobs."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from engine.core.textsafe import safe
from tui.messages import HistoryLoaded
from tui.screens.base import AgentScreen, fit_columns
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
        self._loaded: HistoryLoaded | None = None

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("Generations", classes="section-title", id="history-title")
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield Static("Outbox", classes="section-title", id="outbox-title")
        yield DataTable(id="outbox", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left("agent-tui · History")
        self.agent_app.refresh_badges()
        self._columns(self.app.size.width)
        if self._entries is not None:
            self.post_message(HistoryLoaded(self._entries, self._jobs or []))
        else:
            self.action_reload()

    @work(thread=True, exclusive=True, exit_on_error=False, group="history")
    def load(self) -> None:
        # imported here, in the worker: engine.publish.runner (ghapi with it) takes ~0.25 s
        # to import, and the screen paints first (``binding_catalogue`` also imports this
        # module before the first paint when a keymap is configured)
        from engine.publish.runner import outbox

        workspace = self.agent_app.workspace
        store = workspace.store()
        entries = store.generations(limit=200) if store is not None else []
        jobs = outbox(workspace.repo) if store is not None else []
        self.post_message(HistoryLoaded(entries, jobs))

    def _columns(self, width: int) -> None:
        """Columns sized to the terminal: every column is on screen, the long ones (issue,
        detail, branch, error) share what is left and are cut, never pushed off the edge."""
        self._width = width
        history = self.query_one("#history", DataTable)
        history.clear(columns=True)
        names = ["#", "when (UTC)", "outcome", "issue", "model", "prompt", "detail"]
        self._short_when = width < 120  # the year goes first on a small terminal
        sizes = fit_columns(width, [3, 11 if self._short_when else 16, 9, None, 10, 10, None])
        for name, size in zip(names, sizes, strict=True):
            history.add_column(name, width=size)
        outbox = self.query_one("#outbox", DataTable)
        outbox.clear(columns=True)
        names = ["job", "issue", "status", "state", "branch", "last error"]
        sizes = fit_columns(width, [4, 6, 9, 9, None, None])
        for name, size in zip(names, sizes, strict=True):
            outbox.add_column(name, width=size)

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != getattr(self, "_width", 0):
            self._columns(event.size.width)
            if self._loaded is not None:
                self.on_history_loaded(self._loaded)

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        self._loaded = message
        entries, jobs = message.entries, message.jobs
        history = self.query_one("#history", DataTable)
        history.clear()
        for e in entries:
            detail = e.pr_url or e.detail or ""
            issue = f"#{e.issue_number} {e.issue_title}" if e.issue_number else e.issue_title
            history.add_row(  # Text: titles, names and errors are never markup
                str(e.id),
                _when(e.created_at)[5 if self._short_when else 0 :],
                e.outcome + ("*" if getattr(e, "edited", None) is not None else ""),
                Text(safe(issue)),
                Text(safe(e.model_profile)),
                Text(safe(e.prompt_profile)),
                Text(safe(detail)),
            )
        self.query_one("#history-title", Static).update(f"Generations ({len(entries)})")
        outbox = self.query_one("#outbox", DataTable)
        outbox.clear()
        for j in jobs:
            outbox.add_row(
                str(j.id),
                f"#{j.issue_number}",
                j.status,
                j.state,
                Text(safe(j.branch)),
                Text(safe(j.last_error)),
            )
        title = f"Outbox ({len(jobs)} pending or failed; `agent-tui sync` retries them)"
        self.query_one("#outbox-title", Static).update(title)
        history.focus()

    def action_reload(self) -> None:
        self.load()
