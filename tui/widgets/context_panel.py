"""What the model will be shown for an issue: token numbers per section, files shown, left out."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static


def render_context(context: Any, model: str, prompt: str) -> RenderableType:
    """A compact summary of an ``engine.context.result.ContextResult``."""
    head = Text.assemble(
        ("Context ", "bold"),
        (f"{model} · {prompt}\n", "dim"),
        (f"prompt {context.total_tokens:,} of {context.budget:,} tokens", "bold"),
        (f" (n_ctx {context.n_ctx:,}, {context.reserved_tokens:,} reserved for the answer)", ""),
    )
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(ratio=3, overflow="ellipsis", no_wrap=True)
    table.add_column(justify="right", no_wrap=True, width=7)
    table.add_column(ratio=2, overflow="ellipsis", no_wrap=True, style="dim")
    table.add_row("system prompt", f"{context.system_tokens:,}", "")
    tree_note = f"{context.tree_files} files" + (", summarised" if context.tree_summarised else "")
    table.add_row("file tree", f"{context.tree_tokens:,}", tree_note)
    table.add_row("issue", f"{context.issue_tokens:,}", "")
    for shown in context.shown:
        why = f"outline · {shown.reason}" if shown.outline else shown.reason
        table.add_row(Text(f"+ {shown.path}"), f"{shown.tokens:,}", Text(why))
    parts: list[RenderableType] = [head, table]
    if context.left_out:
        left = Table.grid(padding=(0, 1), expand=True)
        left.add_column(ratio=3, overflow="ellipsis", no_wrap=True)
        left.add_column(ratio=4, overflow="ellipsis", no_wrap=True, style="dim")
        for item in context.left_out:
            left.add_row(Text(f"- {item.path}"), Text(item.detail or item.reason))
        parts += [Text(f"left out ({len(context.left_out)})", style="bold"), left]
    if context.named_missing:
        parts.append(Text("named but missing: " + ", ".join(context.named_missing), style="dim"))
    return Group(*parts)


class ContextPanel(VerticalScroll):
    """Shows the context summary, or what is being done to get it (scrolls when long)."""

    DEFAULT_CSS = """
    ContextPanel {
        padding: 0 1;
        border-left: vkey $panel;
        height: 1fr;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="context-body")

    def _set(self, renderable: RenderableType) -> None:
        self.query_one("#context-body", Static).update(renderable)

    def show_status(self, text: str) -> None:
        """A one-line state: loading the model, building, failed."""
        self._set(Text.assemble(("Context ", "bold"), (text, "dim")))

    def show_context(self, context: Any, model: str, prompt: str) -> None:
        self._set(render_context(context, model, prompt))
