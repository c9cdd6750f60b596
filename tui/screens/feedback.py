"""Ask for a regeneration: the feedback text goes to the model with its previous answer."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, TextArea


class FeedbackModal(ModalScreen[str | None]):
    """Returns the feedback (``ctrl+s``) or None (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Regenerate", id="submit_feedback", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel_feedback"),
    ]

    DEFAULT_CSS = """
    FeedbackModal { align: center middle; }
    FeedbackModal > #feedback-box {
        width: 90%; max-width: 100; height: 14; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    FeedbackModal Label { width: 1fr; }
    FeedbackModal TextArea { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        with Vertical(id="feedback-box"):
            yield Label("What should change? The model gets its previous answer and this text.")
            yield TextArea(id="feedback")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_submit(self) -> None:
        text = self.query_one(TextArea).text.strip()
        if not text:
            self.notify("write what should change first", severity="warning")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
