"""The Models screen: model profiles with their doctor status, and the prompt profiles.

Enter makes the highlighted profile the active one (models load lazily, in the background,
the next time one is needed; ``l`` loads it now).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from engine.flow.session import Workspace
from engine.generate.discover import save_profile
from tui.messages import ProfilesChecked
from tui.screens.base import AgentScreen, fit_columns
from tui.widgets.status_bar import StatusBar

STATUS_STYLE = {"ok": "bold green", "warn": "bold yellow", "fail": "bold red", "info": "dim"}


def summarise_checks(checks: list[Any]) -> tuple[str, str]:
    """(worst status, what to say) of a profile's doctor checks."""
    order = {"fail": 0, "warn": 1, "info": 2, "ok": 3}
    if not checks:
        return "info", "not checked"
    worst = min(checks, key=lambda c: order.get(c.status, 2))
    if worst.status == "ok":
        return "ok", "ready"
    detail = worst.detail + (f" ({worst.hint})" if worst.hint else "")
    return worst.status, detail


def _model_of(profile: Any) -> str:
    for attr in ("model_package", "model_path", "model"):
        value = getattr(profile, attr, None)
        if value:
            return str(value)
    return ""


class ModelsScreen(AgentScreen):
    """Pick the active model and prompt profiles."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "use", "Use", id="use_profile"),
        Binding("l", "load", "Load now", id="load_model"),
        Binding("s", "save", "Save profile", id="save_profile"),
        Binding("d", "check", "Doctor", id="check_models"),
        Binding("escape,q", "app.pop_screen", "Back", id="back_models"),
    ]

    def __init__(self, *, run_doctor: bool = True) -> None:
        super().__init__()
        self.run_doctor = run_doctor
        self.status: dict[str, tuple[str, str]] = {}
        self.found: dict[str, Any] = {}
        """Models found on this machine and not configured
        (``engine.generate.discover.Discovered``)."""

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("Model profiles", classes="section-title")
        yield DataTable(id="models", cursor_type="row")
        yield Static("Prompt profiles", classes="section-title")
        yield DataTable(id="prompts", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left("agent-tui · Models")
        self.agent_app.refresh_badges()
        self._columns(self.app.size.width)
        self.query_one("#models", DataTable).focus()
        found = self.agent_app.discovered
        if found:
            self.show_discovered(found)
        if self.run_doctor:
            # after the first paint: the check loads llama.cpp in a thread, which competes
            # with drawing this screen (its footer and lower half came late)
            self.call_after_refresh(self.action_check)

    def _columns(self, width: int) -> None:
        """Columns sized to the terminal: the detail column takes what is left and is cut,
        so no row grows a horizontal scrollbar."""
        self._width = width
        models = self.query_one("#models", DataTable)
        models.clear(columns=True)
        names = ["", "profile", "backend", "status", "model / detail"]
        for name, size in zip(names, fit_columns(width, [1, 18, 9, 6, None]), strict=True):
            models.add_column(name, width=size)
        prompts = self.query_one("#prompts", DataTable)
        prompts.clear(columns=True)
        names = ["", "profile", "from", "description"]
        for name, size in zip(names, fit_columns(width, [1, 18, 8, None]), strict=True):
            prompts.add_column(name, width=size)
        self._fill_models()
        self._fill_prompts()

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != getattr(self, "_width", 0):
            self._columns(event.size.width)

    @property
    def workspace(self) -> Workspace:
        return self.agent_app.workspace

    def _fill_models(self) -> None:
        table = self.query_one("#models", DataTable)
        row = table.cursor_row
        table.clear()
        config = self.workspace.config
        for name, profile in sorted(config.models.items()):
            active = "●" if name == self.workspace.model_name else ""
            status, detail = self.status.get(name, ("info", "checking…" if self.run_doctor else ""))
            table.add_row(
                active,
                Text(name),  # names come from config files, maybe the repository's: no markup
                profile.backend,
                Text(status, style=STATUS_STYLE.get(status, "")),
                Text(detail if status != "ok" else (profile.description or _model_of(profile))),
                key=name,
            )
        for name, found in self.found.items():
            ctx = f" · context {found.n_ctx}" if found.n_ctx else ""
            table.add_row(
                "+",
                Text(name),
                found.profile().backend,
                Text("found", style="cyan"),
                Text(f"{found.source}: {found.model}{ctx} · Enter uses it, s saves it"),
                key=name,
            )
        if row:
            table.move_cursor(row=row)

    def show_discovered(self, found: list[Any]) -> None:
        """List the models found on this machine that no profile uses yet."""
        config = self.workspace.config
        known = {
            (_model_of(p), getattr(p, "host", None) or getattr(p, "base_url", None))
            for p in config.models.values()
        }
        self.found = {
            d.name: d
            for d in found
            if d.name not in config.models
            and (
                _model_of(d.profile()),
                getattr(d.profile(), "host", None) or getattr(d.profile(), "base_url", None),
            )
            not in known
        }
        self._fill_models()

    def _fill_prompts(self) -> None:
        # engine.context.prompts and engine.flow.doctor (below) are imported when used:
        # ``tui.app.binding_catalogue`` imports this module before the first paint when a
        # keymap is configured, and at the top they made that ~25 ms slower
        from engine.context.prompts import discover_profiles

        table = self.query_one("#prompts", DataTable)
        row = table.cursor_row
        table.clear()
        profiles, errors = discover_profiles(self.workspace.repo)
        for p in profiles:
            active = "●" if p.name == self.workspace.prompt_name else ""
            table.add_row(active, Text(p.name), p.origin, Text(p.description), key=p.name)
        for err in errors:
            table.add_row("", Text("broken", style="bold red"), "", Text(err.message))
        if row:
            table.move_cursor(row=row)

    @work(thread=True, exclusive=True, exit_on_error=False, group="doctor")
    def check(self) -> None:
        from engine.flow.doctor import check_profile

        for name, profile in sorted(self.workspace.config.models.items()):
            status, detail = summarise_checks(check_profile(name, profile))
            self.post_message(ProfilesChecked(name, status, detail))

    def on_profiles_checked(self, message: ProfilesChecked) -> None:
        self.status[message.name] = (message.status, message.detail)
        self._fill_models()

    def action_check(self) -> None:
        self.check()

    def _selected(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    def action_use(self) -> None:
        focused = self.focused
        if isinstance(focused, DataTable) and focused.id == "prompts":
            name = self._selected("prompts")
            if name:
                self.workspace.prompt_name = name
                self._fill_prompts()
                self.notify(f"prompt profile: {name}", timeout=3, markup=False)
            return
        name = self._selected("models")
        if name and name in self.found:  # for this session; s saves it in the user config
            config = self.workspace.config
            config.models[name] = self.found.pop(name).profile()
            config.sources[name] = Path("(found on this machine; s saves it)")
        if name:
            self.agent_app.set_model(name)
            self._fill_models()
            self.notify(
                f"model: {name} (loads when first needed; l loads it now)", timeout=4, markup=False
            )

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_use()

    def action_save(self) -> None:
        """Save the highlighted profile found on this machine to the user config."""
        name = self._selected("models")
        config = self.workspace.config
        found = self.found.get(name or "")
        profile = found.profile() if found is not None else config.models.get(name or "")
        source = config.sources.get(name or "")
        if name is None or profile is None or (found is None and source and source.exists()):
            self.notify("only a model found on this machine needs saving", timeout=3)
            return
        where = save_profile(name, profile)
        config.models[name] = profile
        config.sources[name] = where
        self.found.pop(name, None)
        self._fill_models()
        self.notify(f"saved profile {name} in {where}", timeout=4, markup=False)

    def action_load(self) -> None:
        self.agent_app.load_model()
