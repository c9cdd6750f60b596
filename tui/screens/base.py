"""What every screen shares: worker failures go to the one error modal.

Why: Textual's ``Worker.StateChanged`` does not bubble, so a failed worker of a screen would
otherwise fail silently. Each screen reports the error (title, message, what to do) through
``AgentTuiApp.show_error`` and may react in ``on_worker_error`` (stop a spinner, reset a
state).
"""

from __future__ import annotations

from typing import Any

from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState


class _ReportsWorkerErrors:
    app: Any

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
