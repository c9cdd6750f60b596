"""A syntax-highlighted diff of one file: unified, or side by side when the terminal is wide.

The old and new texts are highlighted whole with the file's lexer (so a multi-line string
stays a string), then cut into lines and laid out by ``difflib``'s grouped opcodes: the same
hunks ``engine.review.diff`` counts. Added and removed lines also carry ``+``/``-`` markers, so the
diff reads the same with ``NO_COLOR``.
"""

from __future__ import annotations

import difflib

from rich.console import Group, RenderableType
from rich.style import Style
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Span, Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.review.diff import split_lines

ADDED = Style(bgcolor="#12361f")
REMOVED = Style(bgcolor="#3c1618")
THEME = "monokai"
CONTEXT = 3


def _without_background(text: Text) -> Text:
    """``text`` with the theme's background removed, so added/removed lines can be tinted."""
    spans = [
        Span(s.start, s.end, Style.from_color(s.style.color) + Style(bold=s.style.bold))
        if isinstance(s.style, Style)
        else s
        for s in text.spans
    ]
    return Text(text.plain, spans=spans, end="", no_wrap=text.no_wrap)


def _highlight(path: str, text: str) -> list[Text]:
    """``text`` highlighted with the lexer of ``path``, one ``Text`` per line."""
    if not text:
        return []
    lexer = Syntax.guess_lexer(path, text)
    syntax = Syntax("", lexer, theme=THEME, background_color="default")
    highlighted = _without_background(syntax.highlight(text.rstrip("\n") + "\n"))
    lines = highlighted.split("\n", allow_blank=True)
    n = len(split_lines(text))
    return list(lines[:n]) + [Text("")] * max(0, n - len(lines))


def _plain(lines: list[str]) -> list[str]:
    return [line.rstrip("\n") for line in lines]


def render_unified(path: str, old: str | None, new: str) -> RenderableType:
    """A unified diff of ``old`` (None: new file) -> ``new`` with highlighted code."""
    old_text = old or ""
    old_lines, new_lines = _plain(split_lines(old_text)), _plain(split_lines(new))
    old_hl, new_hl = _highlight(path, old_text), _highlight(path, new)
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    out: list[RenderableType] = []
    width = len(str(max(len(old_lines), len(new_lines), 1)))
    for group in matcher.get_grouped_opcodes(CONTEXT):
        a0, b0 = group[0][1], group[0][3]
        a1, b1 = group[-1][2], group[-1][4]
        out.append(Text(f"@@ -{a0 + 1},{a1 - a0} +{b0 + 1},{b1 - b0} @@", style="bold cyan"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for k in range(i2 - i1):
                    line = Text(f"{j1 + k + 1:>{width}}   ", style="dim")
                    line.append_text(new_hl[j1 + k])
                    out.append(line)
                continue
            for i in range(i1, i2):
                line = Text(f"{'':>{width}} - ", style="bold red")
                line.append_text(old_hl[i])
                line.stylize(REMOVED)
                out.append(line)
            for j in range(j1, j2):
                line = Text(f"{j + 1:>{width}} + ", style="bold green")
                line.append_text(new_hl[j])
                line.stylize(ADDED)
                out.append(line)
    if not out:
        out.append(Text("no change", style="dim"))
    return Group(*out)


def render_side_by_side(path: str, old: str | None, new: str) -> RenderableType:
    """Old on the left, new on the right, aligned by hunk."""
    old_text = old or ""
    old_lines, new_lines = _plain(split_lines(old_text)), _plain(split_lines(new))
    old_hl, new_hl = _highlight(path, old_text), _highlight(path, new)
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    table = Table.grid(expand=True, padding=(0, 1))
    table.add_column(justify="right", style="dim", no_wrap=True)
    table.add_column(ratio=1, overflow="fold")
    table.add_column(justify="right", style="dim", no_wrap=True)
    table.add_column(ratio=1, overflow="fold")
    groups = list(matcher.get_grouped_opcodes(CONTEXT))
    for index, group in enumerate(groups):
        if index:
            table.add_row("", Text("⋯", style="dim"), "", Text("⋯", style="dim"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for k in range(i2 - i1):
                    table.add_row(str(i1 + k + 1), old_hl[i1 + k], str(j1 + k + 1), new_hl[j1 + k])
                continue
            for k in range(max(i2 - i1, j2 - j1)):
                i, j = i1 + k, j1 + k
                left = Text("- ", style="bold red") + old_hl[i] if i < i2 else Text("")
                right = Text("+ ", style="bold green") + new_hl[j] if j < j2 else Text("")
                if i < i2:
                    left.stylize(REMOVED)
                if j < j2:
                    right.stylize(ADDED)
                table.add_row(
                    str(i + 1) if i < i2 else "", left, str(j + 1) if j < j2 else "", right
                )
    if not groups:
        return Text("no change", style="dim")
    return table


class DiffView(VerticalScroll):
    """Scrollable diff of the selected file."""

    DEFAULT_CSS = """
    DiffView { padding: 0 1; }
    DiffView > #diff-body { width: 1fr; }
    """

    SIDE_BY_SIDE_MIN_WIDTH = 140

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("", id="diff-body")

    def show(self, path: str, old: str | None, new: str, *, split: bool | None = None) -> None:
        """Show the diff of ``path``; ``split`` None picks side by side on a wide screen."""
        if split is None:
            split = self.app.size.width >= self.SIDE_BY_SIDE_MIN_WIDTH
        header = Text.assemble(
            ("new file " if old is None else "", "bold green"), (path, "bold underline")
        )
        body = render_side_by_side(path, old, new) if split else render_unified(path, old, new)
        self.query_one("#diff-body", Static).update(Group(header, body))
        self.scroll_home(animate=False)

    def show_text(self, text: str) -> None:
        self.query_one("#diff-body", Static).update(Text(text, style="dim"))
