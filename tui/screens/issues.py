"""The Issues screen: the repository's open issues, instantly from the cache, filtered as you type.

The list is read from the cache (or local files) in a worker and painted at once; a refresh
from the forge follows in the background, and an unreachable forge only sets the offline
badge: the cached issues stay usable.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Input, Static

from engine.core.textsafe import safe
from engine.issues.forge.firstframe import CachedIssue
from engine.issues.issuefilter import SORT_KEYS, IssueFilter, IssueLike, SortKey, sort_issues
from tui.messages import IssuesLoaded, IssuesRefreshed, IssueStatesLoaded
from tui.screens.base import AgentScreen
from tui.widgets.issue_table import IssueTable
from tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    # a type only: the first frame shows the cache's plain rows before the engine's models
    # (pydantic, ~0.1 s) are imported (tui.app.AgentTuiApp.for_repo)
    from engine.core.models import Issue


class IssuesScreen(AgentScreen):
    """Pick an issue to work on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("escape", "clear_filter", "Clear filter", id="clear_filter", show=False),
        Binding("s", "sort", "Sort", id="sort"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("q", "app.quit", "Quit", id="quit_issues", show=False),
        Binding("H", "app.history", "History", id="history"),
        Binding("M", "app.models", "Models", id="models"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.issues: list[IssueLike] = []
        """``engine.core.models.Issue`` objects; in the first frame, before the engine is
        loaded, the cache's plain rows (``CachedIssue``), replaced by the same issues once
        it is."""
        self.sort_key: SortKey = "updated"
        self._filter: IssueFilter[IssueLike] = IssueFilter([])
        self._open_when_loaded: int | None = None
        """An issue chosen in the first frame (opened once the engine has read it)."""
        self._before_engine = False
        """Showing the first frame's cached rows; the engine is not loaded yet."""
        self.source_name = ""
        self.refresh_note = ""
        self.offline = False
        self.loaded = False
        self._painted = threading.Event()
        """Set once the cached list is on screen: the forge refresh (and its imports: ghapi
        builds GitHub's whole API at import) waits for it, so it does not slow the first
        paint down."""

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Input(
            placeholder="/ filter: words in title, labels or body; #number",
            id="filter",
            compact=True,
        )
        yield IssueTable(id="issues")
        yield Static("loading issues…", id="summary")
        yield Footer()

    def on_mount(self) -> None:
        app = self.app
        repo = getattr(app, "repo", None)
        self.query_one(StatusBar).set_left(f"agent-tui · {repo.name if repo else ''}")
        refresh_badges = getattr(app, "refresh_badges", None)
        if refresh_badges is not None:
            refresh_badges()
        self.query_one(IssueTable).focus()
        first_frame = getattr(app, "first_frame", None)
        if first_frame is None:
            self.load_issues()
            return
        # the cached rows now; the engine (configuration, real issues, refresh) right after
        # they are painted, and ``engine_started`` then reads the list as usual
        self._before_engine = True
        self.on_issues_loaded(
            IssuesLoaded(first_frame.issues, first_frame.source_name, first_frame.refreshed_at)
        )
        self.call_after_refresh(app.start_engine)  # type: ignore[attr-defined]

    def engine_started(self) -> None:
        """The app loaded the engine after the first frame: read the issues for real."""
        self._before_engine = False
        self.load_issues()

    # -- workers ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="issues")
    def load_issues(self) -> None:
        """Read the cached issues, then refresh from the forge in the background."""
        app = self.agent_app  # still known after the app has exited (a quick quit)
        source, cached = app.workspace.cached_issues()
        last_refresh = getattr(source, "last_refresh", None)
        when = last_refresh() if callable(last_refresh) else None
        self.post_message(IssuesLoaded(cached, source.name, when))
        self.load_states()
        if source.REMOTE:
            self._painted.wait(timeout=2.0)
            remember = getattr(app, "remember_issue_source", None)
            if remember is not None:
                remember(source)  # the issue cache to paint first at the next start
            result = source.refresh()
            self.post_message(IssuesRefreshed(result, source.list_issues()))

    @work(thread=True, exclusive=True, exit_on_error=False, group="states")
    def load_states(self) -> None:
        """Where each issue stands (proposal ready, queued, PR #N), from the history."""
        store = self.agent_app.workspace.store()
        if store is not None:
            latest = store.latest_by_issue()
            self.post_message(IssueStatesLoaded({n: r.state for n, r in latest.items()}))

    def on_issue_states_loaded(self, message: IssueStatesLoaded) -> None:
        self.query_one(IssueTable).set_states(message.states)

    def on_screen_resume(self) -> None:
        # back from an issue: a proposal may have been made or published
        if self.loaded and not self._before_engine:
            self.load_states()

    def on_issues_loaded(self, message: IssuesLoaded) -> None:
        self.source_name = message.source
        if message.refreshed_at is not None:
            self.refresh_note = f"refreshed {message.refreshed_at:%Y-%m-%d %H:%M}"
        self.loaded = True
        self._show(message.issues)
        pending = self._open_when_loaded
        if pending is not None and not self._before_engine:  # the engine's issues now
            self._open_when_loaded = None
            for issue in message.issues:
                if issue.number == pending:
                    self._open_issue(issue)
        mark = getattr(self.app, "mark_first_paint", None)
        if mark is not None:
            self.call_after_refresh(mark)
        self.call_after_refresh(self._painted.set)

    def on_issues_refreshed(self, message: IssuesRefreshed) -> None:
        result = message.result
        self.offline = result.offline
        bar = self.query_one(StatusBar)
        bar.set_badge("offline", "offline" if result.offline else None)
        if result.refreshed_at is not None:
            self.refresh_note = f"refreshed {result.refreshed_at.astimezone():%Y-%m-%d %H:%M}"
        if result.offline and result.message:
            self.notify(
                safe(result.message),
                title="Offline: showing cached issues",
                severity="warning",
                markup=False,
            )
        self._show(message.issues)

    # -- display ---------------------------------------------------------------------------
    def _show(self, issues: Sequence[IssueLike]) -> None:
        self.issues = list(issues)
        self._filter = IssueFilter(sort_issues(self.issues, self.sort_key))
        table = self.query_one(IssueTable)
        rows = self._filter.filter(self.filter_text)
        table.empty_text = self._empty_text(self.filter_text, rows)
        table.set_issues(self._filter.issues, rows)
        self._update_summary()
        # the search index once the rows are painted and the other after-paint callbacks ran
        # (not in the first frame's time; the first keystroke does not pay for it either)
        self.call_after_refresh(lambda: self.call_later(lambda: self._filter.prepare()))

    def _empty_text(self, text: str, rows: list[int]) -> str:
        """What the table says when the filter hides every issue (never a blank table)."""
        if rows or not text.strip() or not len(self._filter):
            return ""
        return f"no open issue matches {text.strip()!r}: change the filter, or Esc clears it"

    @property
    def filter_text(self) -> str:
        return self.query_one("#filter", Input).value

    def _update_summary(self) -> None:
        table = self.query_one(IssueTable)
        total = len(self._filter)
        shown = table.row_count
        parts = [
            f"{shown} of {total} open issues" if shown != total else f"{total} open issues",
            f"{self.source_name} issues" if self.source_name else "",
            f"sorted by {self.sort_key}",
            self.refresh_note,
            "OFFLINE (cached)" if self.offline else "",
        ]
        text = " · ".join(p for p in parts if p)
        if total == 0 and not self.issues:
            if not self.loaded:
                text = "loading issues…"
            elif self.source_name == "local":
                text = (
                    "no open issues: add Markdown issues in .agent-tui/issues/ (see the README), "
                    "or try `agent-tui demo`"
                )
            else:
                text = f"no open {self.source_name} issues (r refreshes)"
        self.query_one("#summary", Static).update(Text(safe(text)), layout=False)  # one line

    def apply_filter(self, text: str) -> int:
        """Filter the table by ``text``; returns how many issues match."""
        rows = self._filter.filter(text)
        table = self.query_one(IssueTable)
        table.empty_text = self._empty_text(text, rows)
        table.show_rows(rows)
        self._update_summary()
        return len(rows)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one(IssueTable).focus()

    @on(IssueTable.IssueChosen)
    def _open(self, event: IssueTable.IssueChosen) -> None:
        self._open_issue(event.issue)

    def _open_issue(self, issue: IssueLike) -> None:
        if isinstance(issue, CachedIssue):  # the first frame: the engine is loading
            self._open_when_loaded = issue.number
            return
        self.agent_app.open_issue(cast("Issue", issue))

    # -- actions ---------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if field.value:
            field.value = ""
        self.query_one(IssueTable).focus()

    def action_sort(self) -> None:
        index = SORT_KEYS.index(self.sort_key)
        self.sort_key = SORT_KEYS[(index + 1) % len(SORT_KEYS)]
        self._show(self.issues)
        self.notify(f"sorted by {self.sort_key}", timeout=1.5)

    def action_refresh(self) -> None:
        self.notify("refreshing issues…", timeout=1.5)
        self.load_issues()
