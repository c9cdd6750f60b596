"""The one error modal: a title, what went wrong, and what to do about it. Never a traceback."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


class ErrorModal(ModalScreen[None]):
    """Shows one ``AgentTuiError`` (or an unexpected exception's one-line text)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "close", "Close", id="close_error"),
    ]

    DEFAULT_CSS = """
    ErrorModal { align: center middle; }
    ErrorModal > #error-box {
        width: 90%; max-width: 76; height: auto; max-height: 90%;
        border: thick $error; background: $surface; padding: 1 2;
    }
    ErrorModal #error-title { text-style: bold; color: $error; margin-bottom: 1; }
    ErrorModal #error-hint { margin-top: 1; color: $text-muted; }
    """

    def __init__(self, title: str, message: str, hint: str = "") -> None:
        super().__init__()
        self.error_title = title
        self.message = message
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box"):
            yield Static(self.error_title, id="error-title", markup=False)
            yield Static(self.message, id="error-message", markup=False)
            if self.hint:
                yield Static(f"What to do: {self.hint}", id="error-hint", markup=False)
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
