"""What every screen shares: worker failures go to the one error modal.

Why: Textual's ``Worker.StateChanged`` does not bubble, so a failed worker of a screen would
otherwise fail silently. Each screen reports the error (title, message, what to do) through
``AgentTuiApp.show_error`` and may react in ``on_worker_error`` (stop a spinner, reset a
state).
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

#: below this width the footer packs its keys closer, so every label still fits
COMPACT_FOOTER_WIDTH = 100


class _ReportsWorkerErrors:
    app: Any

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
