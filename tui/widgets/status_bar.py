"""The one-line bar at the top of every main screen: where you are and what is loaded."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusBar(Static):
    """``agent-tui · <context> · ... `` with right-aligned badges (model, offline)."""

    DEFAULT_CSS = """
    StatusBar {
        dock: top;
        height: 1;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__("", id=id)
        self._left = ""
        self._badges: dict[str, str] = {}

    def set_left(self, text: str) -> None:
        """The left part: the screen's context (repo, issue...)."""
        self._left = text
        self._render_bar()

    def set_badge(self, name: str, text: str | None) -> None:
        """Show (or with None remove) a badge on the right, e.g. ``offline``."""
        if text:
            self._badges[name] = text
        else:
            self._badges.pop(name, None)
        self._render_bar()

    def badge(self, name: str) -> str | None:
        return self._badges.get(name)

    def _render_bar(self) -> None:
        left = Text(self._left, style="bold", no_wrap=True, overflow="ellipsis")
        right = Text("  ".join(f"[{b}]" for b in self._badges.values()), no_wrap=True)
        width = max(0, self.size.width - 2) if self.size.width else 78
        room = max(0, width - right.cell_len - 1)
        left.truncate(room, overflow="ellipsis")
        pad = max(1, width - left.cell_len - right.cell_len)
        self.update(Text.assemble(left, " " * pad, right), layout=False)  # always one line

    def on_resize(self) -> None:
        self._render_bar()
