"""The Help screen: every key binding of every screen, with its id for the ``[tui] keymap``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui.keymap import keys_of
from tui.screens.base import UsesAgentApp
from tui.widgets.status_bar import StatusBar

INTRO = (
    "Keyboard-driven from issue to pull request. Remap any key in your config, e.g.\n"
    '[tui]\nkeymap = { generate = "ctrl+g", confirm_publish = "ctrl+y" }\n'
    "Publishing is confirmed only by the confirm_publish key in the publish plan; "
    "Enter, Space or any other key never publishes. Ctrl+P opens the command palette."
)


def _keys(app: Any, binding: Binding, keymap: Mapping[str, str]) -> str:
    shown = []
    for key in keys_of(binding, keymap):
        try:
            shown.append(app.get_key_display(Binding(key, "")))
        except Exception:  # a key Textual cannot display: show it as written
            shown.append(key)
    return " / ".join(shown)


class HelpScreen(UsesAgentApp, Screen[None]):
    """All bindings, grouped by screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="back_help"),
    ]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with VerticalScroll(id="help-body"):
            yield Static(Text(INTRO), id="help-intro")
            yield Static(id="help-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left("agent-tui · Help")
        table = Table(expand=True, show_edge=False, pad_edge=False, box=None)
        table.add_column("Screen", no_wrap=True, style="bold")
        table.add_column("Key", no_wrap=True)
        table.add_column("Action")
        table.add_column("Id (for keymap)", no_wrap=True, style="dim")
        app = self.agent_app
        for title, _cls, bindings in app.binding_catalogue():
            first = True
            for binding in bindings:
                if not binding.description:
                    continue
                table.add_row(
                    title if first else "",
                    _keys(app, binding, app.keymap),
                    binding.description,
                    binding.id or "",
                )
                first = False
        self.query_one("#help-table", Static).update(table)
