"""A virtual table of issues: renders only the rows on screen.

Why not ``DataTable``: re-filling a DataTable with 10,000 rows on every keystroke of the
filter costs far more than the 30 ms budget. Here a filter only swaps the list of row indices
and repaints the visible lines (Textual's Line API), so the cost does not grow with the number
of issues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.core.textsafe import safe
from engine.issues.issuefilter import IssueLike


def _fit(text: str, width: int) -> str:
    """``text`` padded or cut (with an ellipsis) to exactly ``width`` cells."""
    if width <= 0:
        return ""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def _updated(issue: IssueLike) -> str:
    return issue.updated_at.strftime("%Y-%m-%d") if issue.updated_at else ""


class IssueTable(ScrollView, can_focus=True):
    """Issues, one per line, with a fixed header and a cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "choose", "Open", id="open_issue"),
        Binding("up,k", "cursor(-1)", "Up", id="cursor_up", show=False),
        Binding("down,j", "cursor(1)", "Down", id="cursor_down", show=False),
        Binding("pageup", "page(-1)", "Page up", id="page_up", show=False),
        Binding("pagedown", "page(1)", "Page down", id="page_down", show=False),
        Binding("home", "first", "First", id="first_issue", show=False),
        Binding("end", "last", "Last", id="last_issue", show=False),
    ]

    COMPONENT_CLASSES = {
        "issue-table--header",
        "issue-table--cursor",
        "issue-table--labels",
        "issue-table--state",
    }

    DEFAULT_CSS = """
    IssueTable {
        overflow-x: hidden;
        overflow-y: auto;
        height: 1fr;
    }
    IssueTable > .issue-table--header { text-style: bold; background: $panel; }
    IssueTable > .issue-table--cursor { background: $accent 40%; text-style: bold; }
    IssueTable:focus > .issue-table--cursor { background: $accent; color: $text; }
    IssueTable > .issue-table--labels { color: $text-muted; }
    IssueTable > .issue-table--state { color: $success; text-style: bold; }
    App:nocolor IssueTable > .issue-table--cursor { text-style: bold reverse; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    @dataclass
    class IssueChosen(Message):
        """The user opened an issue (Enter or a double click)."""

        issue: IssueLike
        """An ``engine.core.models.Issue``, or a first-frame row (``CachedIssue``) before the
        engine is loaded."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self._issues: list[IssueLike] = []
        self._rows: list[int] = []
        self._styles: dict[str, Style] = {}
        self._states: dict[int, str] = {}
        self.empty_text = ""
        """Shown in the table when no row is (e.g. what to do when a filter matches none)."""

    def notify_style_update(self) -> None:
        self._styles.clear()
        super().notify_style_update()

    def _style(self, name: str) -> Style:
        """A component style (cached: ``render_line`` runs for every visible line)."""
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(name)
        return style

    # -- data ------------------------------------------------------------------------------
    def set_issues(self, issues: Sequence[IssueLike], rows: Sequence[int] | None = None) -> None:
        """Show ``issues`` (in this order), or only those at ``rows``."""
        self._issues = list(issues)
        self.show_rows(range(len(self._issues)) if rows is None else rows)

    def show_rows(self, rows: Sequence[int]) -> None:
        """Show only the issues at these indices; the cursor stays on its issue when it can."""
        current = self.current_issue
        self._rows = list(rows)
        index = 0
        if current is not None:
            # keep the cursor on the same issue if it is still shown (a short scan)
            for pos, row in enumerate(self._rows[:2000]):
                if self._issues[row] is current:
                    index = pos
                    break
        self.virtual_size = Size(self.size.width, len(self._rows) + 1)
        self.cursor = min(index, max(0, len(self._rows) - 1))
        self.refresh()

    def set_states(self, states: dict[int, str]) -> None:
        """Where each issue stands (``proposal``, ``queued``, ``PR #12``), shown in a
        State column when any issue has one."""
        self._states = dict(states)
        self.refresh()

    def state_of(self, number: int) -> str:
        return self._states.get(number, "")

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def current_issue(self) -> IssueLike | None:
        if not self._rows or self.cursor >= len(self._rows):
            return None
        return self._issues[self._rows[self.cursor]]

    def visible_issues(self) -> list[IssueLike]:
        """The issues shown, in order (for tests)."""
        return [self._issues[r] for r in self._rows]

    # -- cursor ----------------------------------------------------------------------------
    def watch_cursor(self, cursor: int) -> None:
        body = max(1, self.size.height - 1)
        top = round(self.scroll_y)
        if cursor < top:
            self.scroll_to(y=cursor, animate=False)
        elif cursor >= top + body:
            self.scroll_to(y=cursor - body + 1, animate=False)
        self.refresh()

    def _move(self, to: int) -> None:
        if self._rows:
            self.cursor = max(0, min(len(self._rows) - 1, to))

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(1, self.size.height - 2))

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self._rows) - 1)

    def action_choose(self) -> None:
        issue = self.current_issue
        if issue is not None:
            self.post_message(self.IssueChosen(issue))

    def on_click(self, event: events.Click) -> None:
        row = event.y - 1 + round(self.scroll_y)
        if event.y >= 1 and 0 <= row < len(self._rows):
            self.cursor = row
            if event.chain >= 2:
                self.action_choose()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self._rows) + 1)

    # -- rendering -------------------------------------------------------------------------
    def _columns(self, width: int) -> tuple[int, int, int, int, int, int]:
        number = 6
        comments = 4
        updated = 10
        state = 9 if self._states else 0
        labels = max(8, min(24, width // 5))
        title = max(
            8, width - number - comments - updated - labels - 4 - (state + 1 if state else 0)
        )
        return number, state, title, labels, updated, comments

    def _line(self, cells: tuple[str, str, str, str, str, str], width: int) -> str:
        n, st, t, lab, upd, com = self._columns(width)
        state = f"{_fit(cells[1], st)} " if st else ""
        text = (
            f"{_fit(cells[0], n)} {state}{_fit(cells[2], t)} {_fit(cells[3], lab)} "
            f"{_fit(cells[4], upd)} {_fit(cells[5].rjust(com), com)}"
        )
        return set_cell_size(text, width)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            style = base + self._style("issue-table--header")
            text = self._line(("#", "State", "Title", "Labels", "Updated", "Cmt"), width)
            return Strip([Segment(text, style)], width)
        index = y - 1 + round(self.scroll_y)
        if index >= len(self._rows):
            if y == 1 and not self._rows and self.empty_text:
                style = base + self._style("issue-table--labels")
                return Strip([Segment(set_cell_size(f"  {self.empty_text}", width), style)], width)
            return Strip.blank(width, base)
        issue = self._issues[self._rows[index]]
        style = base
        if index == self.cursor:
            style = base + self._style("issue-table--cursor")
        n, st, t, lab, upd, com = self._columns(width)
        labels_style = style
        if index != self.cursor:
            labels_style = style + self._style("issue-table--labels")
        segments = [Segment(f"{_fit('#' + str(issue.number), n)} ", style)]
        if st:
            state = self._states.get(issue.number, "")
            state_style = style + self._style("issue-table--state") if state else style
            segments.append(Segment(f"{_fit(state, st)} ", state_style))
        segments += [
            Segment(f"{_fit(safe(issue.title), t)} ", style),
            Segment(_fit(safe(", ".join(issue.labels)), lab), labels_style),
            Segment(f" {_fit(_updated(issue), upd)} {str(issue.comments).rjust(com)}", style),
        ]
        used = n + t + lab + upd + com + 4 + (st + 1 if st else 0)
        if used < width:
            segments.append(Segment(" " * (width - used), style))
        strip = Strip(segments, max(width, used))
        return strip.crop(0, width) if used > width else strip
