"""The agent-tui Textual app: issues -> generation -> preview -> publish, all from the keyboard.

The app is a thin client of ``engine``: every slow step runs in a thread worker that calls the
engine and posts a past-tense message (``tui.messages``); every expected failure is an
``AgentTuiError`` shown by the one error modal. Key bindings have ids so users can remap them
from the ``[tui] keymap`` table of the config; the command palette (``ctrl+p``) lists the
actions of the screen it was opened from.

Publishing is only ever confirmed by the ``confirm_publish`` binding (``ctrl+y`` by default) in
the publish plan; a keymap that would put it on Enter, Space or a plain character is refused
(``tui.keymap``).

The app owns navigation: screens ask it to open the next one (``open_issue``,
``open_generating``, ``open_preview``, ``open_publish_plan``...), so no screen imports another.
Each ``open_*`` imports its screen when called: only the issue list is needed for the first
paint, and importing every screen (``binding_catalogue``) takes 80-100 ms on top of
``tui.app`` (tests/test_first_paint_imports.py; bench/tui_bench.py measures the start).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType, Keymap
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from engine.cli.exitcodes import ERROR
from engine.core import configfiles
from engine.core.errors import AgentTuiError, ConfigError, ModelHostCrashed
from engine.core.textsafe import safe
from engine.issues.forge.firstframe import FirstFrame, read_first_frame, remember
from tui.keymap import CONFIRM_PUBLISH_ID, Catalogue, binding_ids, bindings_of, split_keymap
from tui.messages import ModelLoaded, ModelLoadStarted, WorkerFailed
from tui.screens.error import ErrorModal
from tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    # The engine proper (configuration, session, issue sources) imports pydantic: ~0.1 s of a
    # ~0.35 s start (docs/benchmarks.md, "Process start, second part"). The functions that
    # need it import it (``for_repo``, ``__init__`` given a config, ``start_engine``), after
    # the first frame whenever that frame can be painted from the issue cache without it.
    # The rest are the types of the open_* arguments.
    from engine.core.config import AppConfig
    from engine.core.models import ChangeProposal, Issue
    from engine.flow.session import IssueRun, ModelHost, Workspace
    from engine.issues.forge.base import IssueSource


def binding_catalogue() -> Catalogue:
    """Every screen's bindings: (screen title, class name, bindings), for Help and keymaps.

    The app knows its screens (it opens them all), so the catalogue is here and
    ``tui.keymap`` imports no screen. Imported when called: most screens are not needed for
    the first paint (tests/test_first_paint_imports.py).
    """
    from tui.screens.details import DetailsModal
    from tui.screens.edit_file import EditFileScreen
    from tui.screens.error import ErrorModal
    from tui.screens.feedback import FeedbackModal
    from tui.screens.generating import GeneratingScreen
    from tui.screens.help import HelpScreen
    from tui.screens.history import HistoryScreen
    from tui.screens.issue import IssueScreen
    from tui.screens.issues import IssuesScreen
    from tui.screens.models import ModelsScreen
    from tui.screens.preview import PreviewScreen
    from tui.screens.publish_plan import PublishPlanScreen
    from tui.widgets.issue_table import IssueTable

    return [
        ("Everywhere", "AgentTuiApp", bindings_of(AgentTuiApp)),
        ("Issues", "IssuesScreen", bindings_of(IssuesScreen) + bindings_of(IssueTable)),
        ("Issue", "IssueScreen", bindings_of(IssueScreen)),
        ("Generating", "GeneratingScreen", bindings_of(GeneratingScreen)),
        ("Preview", "PreviewScreen", bindings_of(PreviewScreen)),
        ("Edit file", "EditFileScreen", bindings_of(EditFileScreen)),
        ("Edit details", "DetailsModal", bindings_of(DetailsModal)),
        ("Regenerate", "FeedbackModal", bindings_of(FeedbackModal)),
        ("Publish plan", "PublishPlanScreen", bindings_of(PublishPlanScreen)),
        ("History", "HistoryScreen", bindings_of(HistoryScreen)),
        ("Models", "ModelsScreen", bindings_of(ModelsScreen)),
        ("Help", "HelpScreen", bindings_of(HelpScreen)),
        ("Error", "ErrorModal", bindings_of(ErrorModal)),
    ]


def check_keymap(keymap: dict[str, str]) -> list[str]:
    """Problems with a ``[tui] keymap`` table (empty when it is fine); see
    ``tui.keymap.split_keymap``."""
    return split_keymap(keymap, binding_ids(binding_catalogue()))[1]


class AgentTuiApp(App[int]):
    """agent-tui's terminal UI for one repository.

    Args:
        repo: the repository directory.
        config: the loaded configuration (None: loaded after ``first_frame`` is painted,
            or at once without one).
        source: the issue source (default: chosen by the engine for this repository).
        workspace: an existing engine workspace (tests, the demo).
        first_frame: the cached issues to paint before the engine is loaded (``for_repo``).
        fingerprint: ``engine.core.configfiles.fingerprint(repo)`` taken before ``config`` was
            loaded: the issue source is then remembered for the next start's first frame.
    """

    CSS_PATH = "app.tcss"
    TITLE = "agent-tui"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,f1", "help", "Help", id="help"),
        # shown in the footer of the Issues screen only (tui.screens.issues): on the others
        # the screen's own keys need the room at 80 columns
        Binding("H", "history", "History", id="history", show=False),
        Binding("M", "models", "Models", id="models", show=False),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(
        self,
        repo: Path,
        config: AppConfig | None,
        *,
        source: IssueSource | None = None,
        workspace: Workspace | None = None,
        first_frame: FirstFrame | None = None,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__()
        self.repo = repo
        self.first_frame = first_frame
        """The cached issue list painted before the engine is loaded (``for_repo``)."""
        self.startup_error: AgentTuiError | None = None
        """The configuration failed to load after the first frame (``tui.cli`` reports it)."""
        self._fingerprint = fingerprint
        if config is None and first_frame is None:  # nothing to paint without it
            from engine.core.config import load_config  # see the note on the TYPE_CHECKING imports

            config = load_config(repo)
        self._config = config
        self._workspace = workspace
        if config is not None and workspace is None:
            # Imported here, not lazily by the issue prefetch thread: an import in that
            # thread holds Python's import lock while the UI thread imports Textual's widgets
            # during its first compose, so the two serialise and the first paint came ~0.3 s
            # later (bench/tui_bench.py).
            from engine.flow.session import Workspace  # see the note on the TYPE_CHECKING imports
            from engine.issues.forge.registry import issue_source_for  # noqa: F401

            self._workspace = Workspace(repo, config, source=source)
        if self._workspace is not None:
            # read the issue cache while Textual starts (the first paint shows it)
            self._workspace.prefetch_issues()
        self.model_state = "not loaded"
        self.started_at = time.perf_counter()
        self.first_paint_at: float | None = None
        """``time.perf_counter()`` when the issue list was first painted (the benchmark)."""
        self.exit_on_first_paint = False
        self.first_paint_rows = 0
        self._shown_errors: list[AgentTuiError] = []
        self.discovered: list[Any] | None = None
        """Models found on this machine (None: not looked yet); see ``discover_models``."""

    @classmethod
    def for_repo(cls, repo: Path) -> AgentTuiApp:
        """The app for ``repo`` as ``agent-tui`` opens it.

        When the configuration's inputs and the git remote are those of the last start
        (``engine.issues.forge.firstframe``), the first frame shows the cached issues before the
        configuration and the engine are loaded (pydantic and the engine's modules: ~0.1 s of
        a ~0.35 s start, bench/tui_bench.py); they load right after it is painted
        (``start_engine``). Otherwise the configuration is loaded first, as always.

        Raises:
            ConfigError: the configuration is invalid (loaded before the app starts).
        """
        fingerprint = configfiles.fingerprint(repo)
        first_frame = read_first_frame(repo, fingerprint)
        if first_frame is not None:
            return cls(repo, None, first_frame=first_frame, fingerprint=fingerprint)
        from engine.core.config import load_config  # see the note on the TYPE_CHECKING imports

        return cls(repo, load_config(repo), fingerprint=fingerprint)

    # -- the engine ------------------------------------------------------------------------
    def _ensure_engine(self) -> None:
        """Start the engine now if the first frame was painted without it: on the UI thread
        (a worker waits for it there; ``start_engine`` touches the screens)."""
        if self._workspace is not None or self.startup_error is not None:
            return
        if self._loop is not None and self._thread_id != threading.get_ident():
            self.call_from_thread(self.start_engine)
        else:
            self.start_engine()

    @property
    def config(self) -> AppConfig:
        """The configuration (loaded now if the first frame was painted without it)."""
        if self._config is None:
            self._ensure_engine()
        if self._config is None:
            raise self.startup_error or RuntimeError("the configuration is not loaded")
        return self._config

    @property
    def workspace(self) -> Workspace:
        """The engine's workspace (loaded now if the first frame was painted without it)."""
        if self._workspace is None:
            self._ensure_engine()
        if self._workspace is None:
            raise self.startup_error or RuntimeError("the engine is not loaded")
        return self._workspace

    @property
    def models(self) -> ModelHost:
        return self.workspace.models

    def start_engine(self) -> None:
        """Load the configuration and the engine after a first frame painted without them
        (once), then apply the settings and let the screens read the real issues."""
        if self._workspace is not None or self.startup_error is not None:
            return
        # after the first frame: see the note on the TYPE_CHECKING imports
        from engine.core.config import load_config
        from engine.flow.session import Workspace

        try:
            config = self._config or load_config(self.repo)
        except AgentTuiError as exc:  # the files changed since the fingerprint was taken
            self.startup_error = exc
            self.exit(return_code=ERROR)
            return
        self._config = config
        self._workspace = Workspace(self.repo, config)
        self._apply_settings(self._apply_keymap())
        self.refresh_badges()
        for screen in self.screen_stack:
            started = getattr(screen, "engine_started", None)
            if callable(started):
                started()

    def remember_issue_source(self, source: IssueSource) -> None:
        """Record the issue source the configuration chose, for the next start's first frame
        (``engine.issues.forge.firstframe``). Called by the issue list's worker thread."""
        cache = getattr(source, "cache", None)
        if self._fingerprint is None or self.first_frame is not None or cache is None:
            return
        github = self.config.github
        with contextlib.suppress(OSError, AgentTuiError):
            remember(
                self.repo,
                self._fingerprint,
                # a repository named by [github] repo does not depend on the remote
                remote=None if github.repo else github.remote,
                source_name=source.name,
                cache_key=cache.source,
                cache_path=cache.path,
                default_model=self.config.default_model,
            )

    # -- startup ---------------------------------------------------------------------------
    def on_mount(self) -> None:
        from tui.screens.issues import IssuesScreen

        if self._workspace is None:  # the first frame first, the engine after it
            self.push_screen(IssuesScreen())
            return
        problems = self._apply_keymap()
        self.push_screen(IssuesScreen())
        self._apply_settings(problems)

    def _apply_keymap(self) -> list[str]:
        """Apply the safe part of the ``[tui] keymap``; returns what was refused."""
        keymap, problems = (
            split_keymap(self.config.tui.keymap, binding_ids(binding_catalogue()))
            if self.config.tui.keymap
            else ({}, [])
        )
        self.set_keymap(keymap)  # the safe part; the user learns what was ignored
        return problems

    def _apply_settings(self, keymap_problems: list[str]) -> None:
        if keymap_problems:
            self.show_error(
                ConfigError(
                    "; ".join(keymap_problems),
                    hint="fix the [tui] keymap table of your config; those entries are ignored",
                    title="Key map error",
                )
            )
        untrusted = self.config.untrusted_message()
        if untrusted:  # untrusted text: never markup
            self.notify(
                safe(untrusted)
                + "\nQuit and run `agent-tui trust` in the repository to apply them.",
                title="Repository config not trusted",
                severity="warning",
                timeout=30,
                markup=False,
            )
        if self.config.tui.preload_model:
            self.load_model()
        # after the first paint, in a thread: loopback servers and GGUF files (Models screen)
        self.call_after_refresh(self.discover_models)

    @work(thread=True, exclusive=True, exit_on_error=False, group="discover")
    def discover_models(self) -> None:
        """Find the models this machine runs or has (``engine.generate.discover``), for the Models
        screen; short timeouts, loopback only."""
        from engine.generate.discover import discover

        self.discovered = discover()
        for screen in self.screen_stack:
            show = getattr(screen, "show_discovered", None)
            if callable(show):
                self.call_from_thread(show, self.discovered)

    def mark_first_paint(self) -> None:
        """Record the first paint of the issue list (once)."""
        if self.first_paint_at is None:
            self.first_paint_at = time.perf_counter()
            self.first_paint_rows = len(getattr(self.screen, "issues", []))
            if self.exit_on_first_paint:
                self.exit()

    # -- the model -------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        if self._workspace is None and self.first_frame is not None:
            return self.first_frame.default_model  # the first frame, before the engine
        return self.workspace.model_name

    def set_model(self, name: str) -> None:
        """Make ``name`` the active model profile (loaded lazily when next needed)."""
        self.workspace.set_model(name)
        self.model_state = "loaded" if self.models.is_loaded(name) else "not loaded"
        self.refresh_badges()

    @work(thread=True, exclusive=True, exit_on_error=False, group="model")
    def load_model(self) -> None:
        """Load the active model in the background (it can take seconds)."""
        name = self.model_name
        if self.models.is_loaded(name):
            return
        self.post_message(ModelLoadStarted(name))
        started = time.perf_counter()
        self.models.load(name)
        self.post_message(ModelLoaded(name, time.perf_counter() - started))

    def on_model_load_started(self, message: ModelLoadStarted) -> None:
        self.model_state = "loading…"
        self.refresh_badges()

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.model_state = "loaded"
        self.refresh_badges()

    def model_crashed(self) -> None:
        """The model host died: nothing is loaded now, and the next use starts a new host."""
        self.model_state = "crashed, restarts when next used"
        self.refresh_badges()

    def refresh_badges(self) -> None:
        """Update the model badge on every screen's status bar."""
        text = f"{self.model_name}: {self.model_state}"
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.set_badge("model", text)

    # -- errors ----------------------------------------------------------------------------
    def show_error(self, error: BaseException) -> None:
        """Show an error in the one error modal: title, message, what to do."""
        if isinstance(error, ModelHostCrashed):
            self.model_crashed()
        if isinstance(error, AgentTuiError):
            title, message, hint = error.title, error.message, error.hint
        else:
            title = "Unexpected error"
            message = f"{type(error).__name__}: {error}"
            hint = "this is a bug in agent-tui; please report it with what you were doing"
        self.push_screen(ErrorModal(title, message, hint))

    def on_worker_failed(self, message: WorkerFailed) -> None:
        self.show_error(message.error)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            if event.worker.group == "model" and not isinstance(
                event.worker.error, ModelHostCrashed
            ):
                self.model_state = "failed"
                self.refresh_badges()
            self.show_error(event.worker.error)

    # -- key map ---------------------------------------------------------------------------
    keymap: Mapping[str, str] = MappingProxyType({})
    """The keymap in force (``set_keymap``): binding id -> comma-separated keys, for the Help
    screen and the publish plan's confirm key (``tui.keymap``)."""

    def set_keymap(self, keymap: Keymap) -> None:
        """Textual's ``set_keymap``, remembered in ``keymap`` (Textual keeps it private)."""
        self.keymap = MappingProxyType(dict(keymap))
        super().set_keymap(keymap)

    def binding_catalogue(self) -> Catalogue:
        """Every screen's bindings (``tui.app.binding_catalogue``), for the Help screen."""
        return binding_catalogue()

    # -- navigation: screens open each other through these -------------------------------
    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_history(self) -> None:
        from tui.screens.history import HistoryScreen

        if not isinstance(self.screen, HistoryScreen):
            self.push_screen(HistoryScreen())

    def action_models(self) -> None:
        from tui.screens.models import ModelsScreen

        if not isinstance(self.screen, ModelsScreen):
            self.push_screen(ModelsScreen())

    def open_issue(self, issue: Issue) -> None:
        """The Issue screen of ``issue``, over the issue list."""
        from tui.screens.issue import IssueScreen

        self.push_screen(IssueScreen(issue))

    def open_generating(
        self, run: IssueRun, feedback: str | None = None, *, replace: bool = False
    ) -> None:
        """Generate ``run``'s proposal (with ``feedback`` on the previous answer) on the
        Generating screen; ``replace``: in place of the current screen (a regeneration)."""
        from tui.screens.generating import GeneratingScreen

        screen = GeneratingScreen(run, feedback)
        if replace:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def open_preview(self, run: IssueRun, *, replace: bool = False) -> None:
        """The Preview of ``run``'s proposal; ``replace``: in place of the current screen
        (the Generating screen, once the answer is checked)."""
        from tui.screens.preview import PreviewScreen

        screen = PreviewScreen(run)
        if replace:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def open_publish_plan(self, run: IssueRun) -> None:
        """The publish plan of ``run``'s proposal. Once published or queued, the review
        records it (the Issue screen says what became of it) and a notification tells."""
        from tui.screens.publish_plan import PublishPlanScreen, result_words

        def done(result: Any) -> None:
            if result is None:
                return
            review = run.review
            if review is not None:
                review.outcome = "published" if result.published else "queued"
                review.pr_url = result.pr_url
            title, words = result_words(result)
            self.notify(words, title=title, timeout=8, markup=False)

        self.push_screen(PublishPlanScreen(run), done)

    def open_edit_file(self, path: str, content: str, done: Callable[[str | None], None]) -> None:
        """The in-app editor on one file of a proposal; ``done`` gets the new content (None:
        discarded)."""
        from tui.screens.edit_file import EditFileScreen

        self.push_screen(EditFileScreen(path, content), done)

    def open_details(
        self, proposal: ChangeProposal, done: Callable[[dict[str, str] | None], None]
    ) -> None:
        """Edit a proposal's branch, commit message, PR title and body; ``done`` gets the
        changed fields (None: cancelled)."""
        from tui.screens.details import DetailsModal

        modal = DetailsModal(
            proposal.branch_suffix, proposal.commit_message, proposal.pr_title, proposal.pr_body
        )
        self.push_screen(modal, done)

    def open_feedback(self, done: Callable[[str | None], None]) -> None:
        """Ask what should change before a regeneration; ``done`` gets it (None: cancelled)."""
        from tui.screens.feedback import FeedbackModal

        self.push_screen(FeedbackModal(), done)

    # -- command palette -------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The screen's own actions first, then the app's; never the publish confirmation."""
        seen: set[str] = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description or binding.id == CONFIRM_PUBLISH_ID:
                continue
            if not active.enabled or binding.action in seen:
                continue
            seen.add(binding.action)
            node = active.node
            action = binding.action

            def run(node: Any = node, action: str = action) -> None:
                self.call_later(self.run_action, action, node)

            label = self.get_key_display(binding) if binding.key else key
            yield SystemCommand(binding.description, f"key: {label}", run)
        yield from super().get_system_commands(screen)
