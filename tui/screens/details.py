"""Edit the proposal's branch suffix, commit message, PR title and PR body."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, TextArea


class DetailsModal(ModalScreen[dict[str, str] | None]):
    """Returns the changed fields (``ctrl+s``) or None (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="save_details", priority=True),
        Binding("escape", "cancel", "Cancel", id="cancel_details"),
    ]

    DEFAULT_CSS = """
    DetailsModal { align: center middle; }
    DetailsModal > #details-box {
        width: 90%; max-width: 100; height: 90%; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    DetailsModal Input { margin-bottom: 0; }
    DetailsModal #pr_body { height: 1fr; min-height: 4; }
    """

    def __init__(self, branch_suffix: str, commit_message: str, pr_title: str, pr_body: str):
        super().__init__()
        self.values = {
            "branch_suffix": branch_suffix,
            "commit_message": commit_message,
            "pr_title": pr_title,
            "pr_body": pr_body,
        }

    def compose(self) -> ComposeResult:
        with Vertical(id="details-box"):
            yield Label("Branch suffix (lowercase, hyphens, at most 30 characters)")
            yield Input(self.values["branch_suffix"], id="branch_suffix", compact=True)
            yield Label("Commit message")
            yield Input(self.values["commit_message"], id="commit_message", compact=True)
            yield Label("PR title")
            yield Input(self.values["pr_title"], id="pr_title", compact=True)
            yield Label("PR body (Markdown; keep 'Closes #N')")
            yield TextArea(self.values["pr_body"], id="pr_body")
        yield Footer()

    def action_save(self) -> None:
        changed = {
            key: self.query_one(f"#{key}", Input).value
            for key in ("branch_suffix", "commit_message", "pr_title")
        }
        changed["pr_body"] = self.query_one("#pr_body", TextArea).text
        self.dismiss({k: v for k, v in changed.items() if v != self.values[k]})

    def action_cancel(self) -> None:
        self.dismiss(None)
