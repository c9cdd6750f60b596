"""Edit one file of the proposal in an in-app editor (``E`` on the Preview uses ``$EDITOR``)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, TextArea

from tui.widgets.status_bar import StatusBar

_LANGUAGES = {
    ".py": "python",
    ".md": "markdown",
    ".json": "json",
    ".toml": "toml",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".sql": "sql",
    ".html": "html",
    ".css": "css",
    ".js": "javascript",
    ".sh": "bash",
}


def language_for(path: str) -> str | None:
    """The TextArea language of ``path`` (None: plain text)."""
    for suffix, language in _LANGUAGES.items():
        if path.endswith(suffix):
            return language
    return None


class EditFileScreen(Screen[str | None]):
    """Returns the edited content (``ctrl+s``) or None (Esc: nothing changes)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="save_file", priority=True),
        Binding("escape", "discard", "Discard edits", id="discard_edits"),
    ]

    def __init__(self, path: str, content: str) -> None:
        super().__init__()
        self.path = path
        self.content = content

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        language = language_for(self.path)
        try:
            area = TextArea.code_editor(self.content, language=language, id="editor")
        except Exception:  # a language without its tree-sitter grammar: edit as plain text
            area = TextArea.code_editor(self.content, id="editor")
        yield area
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left(f"agent-tui · editing {self.path}")
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_discard(self) -> None:
        self.dismiss(None)
