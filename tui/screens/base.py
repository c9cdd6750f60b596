"""What every screen shares: the typed app, worker failures in the one error modal.

Why: Textual's ``Worker.StateChanged`` does not bubble, so a failed worker of a screen would
otherwise fail silently. Each screen reports the error (title, message, what to do) through
``AgentTuiApp.show_error`` and may react in ``on_worker_error`` (stop a spinner, reset a
state).

``agent_app`` is ``self.app`` typed as the ``AgentTuiApp`` (its workspace, model badge and
navigation), as posting's screens ``cast`` theirs: ``tui.app`` is imported for the type
checker only, since the app imports the screens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual import events
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from tui.app import AgentTuiApp

#: below this width the footer packs its keys closer, so every label still fits
COMPACT_FOOTER_WIDTH = 100


def fit_columns(width: int, sizes: list[int | None]) -> list[int]:
    """Column widths for a ``DataTable`` of ``width`` cells: fixed sizes as given, the rest
    (None) share what is left (at least 8 each); each column also takes 2 cells of padding."""
    room = width - 2 * len(sizes) - 2  # padding, and the vertical scrollbar
    fixed = sum(s for s in sizes if s is not None)
    flexible = [i for i, s in enumerate(sizes) if s is None]
    share = max(8, (room - fixed) // max(1, len(flexible)))
    return [share if s is None else s for s in sizes]


class UsesAgentApp:
    """Gives a screen ``agent_app``: its app, typed."""

    app: Any

    @property
    def agent_app(self) -> AgentTuiApp:
        """The ``AgentTuiApp`` this screen runs in."""
        return cast("AgentTuiApp", self.app)


class _ReportsWorkerErrors(UsesAgentApp):
    def on_resize(self, event: events.Resize) -> None:
        # Textual calls this besides a screen's own on_resize (handlers run along the MRO)
        for footer in self.query(Footer):  # type: ignore[attr-defined]
            footer.compact = event.size.width < COMPACT_FOOTER_WIDTH
            # ctrl+p still opens the palette; its hint gives its room to the screen's keys
            footer.show_command_palette = event.size.width >= COMPACT_FOOTER_WIDTH

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.show_error(event.worker.error)
            self.on_worker_error(event.worker)

    def on_worker_error(self, worker: Worker[Any]) -> None:
        """A worker of this screen failed (the error modal is already shown)."""


class AgentScreen(_ReportsWorkerErrors, Screen[Any]):
    """A full screen of agent-tui."""


class AgentModal(_ReportsWorkerErrors, ModalScreen[Any]):
    """A modal screen of agent-tui."""
