"""The TUI's shape: the app owns navigation, so no screen imports another screen or the app;
the keymap in force is the app's, read through ``tui.keymap``.

Why: screens that create each other (Generating and Preview did) import each other, and a
screen that reads the app's module (Help read ``binding_catalogue``) closes a circle with it.
Screens ask the app to open the next one (``AgentTuiApp.open_*``) and reach it typed through
``agent_app``; ``tui.screens.base`` may name the app for the type checker only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.widgets import Static

from engine.core.config import load_config
from engine.core.models import ChangeProposal, FileChange
from engine.flow.demo import create_demo
from engine.issues.forge.local import LocalIssueSource
from tests.conftest import REPO_ROOT
from tui.app import AgentTuiApp
from tui.screens.publish_plan import PlanState, PublishPlanScreen

SCREENS = REPO_ROOT / "tui" / "screens"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, imported for the type checker only) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            type_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in type_only))
        elif isinstance(node, ast.Import):
            out += [(alias.name, id(node) in type_only) for alias in node.names]
    return out


def test_no_screen_imports_another_screen_or_the_app() -> None:
    found = []
    for path in sorted(SCREENS.glob("*.py")):
        for module, type_only in _imports(path):
            if module == "tui.app" and not type_only:
                found.append(f"{path.name} imports tui.app")
            if module.startswith("tui.screens.") and module != "tui.screens.base":
                found.append(f"{path.name} imports {module}")
    assert found == []


def test_no_reads_of_textual_private_keymap() -> None:
    """The keymap in force is ``AgentTuiApp.keymap``; ``tui.keymap`` reads it."""
    users = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / "tui").rglob("*.py"))
        if "._keymap" in path.read_text(encoding="utf-8")
    ]
    assert users == []


async def test_a_remapped_confirm_key_reaches_the_publish_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan tells (and binds) the confirm key of the keymap in force, not the default."""
    config = tmp_path / "config.toml"
    config.write_text('[tui]\nkeymap = { confirm_publish = "ctrl+o" }\n')
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    repo = create_demo(tmp_path / "demo").repo
    app = AgentTuiApp(repo, load_config(repo), source=LocalIssueSource(repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.keymap == {"confirm_publish": "ctrl+o"}
        run = app.workspace.start(app.workspace.issue_source().get_issue(1), comments=[])
        proposal = ChangeProposal(
            branch_suffix="health",
            commit_message="feat: add health",
            pr_title="feat: add health",
            pr_body="Closes #1",
            files=[FileChange(path="app/health.py", content='"""Health."""\n')],
        )
        run.review = run._review(proposal)
        app.open_publish_plan(run)
        await pilot.pause()
        plan = app.screen
        assert isinstance(plan, PublishPlanScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert plan.state == PlanState.READY
        shown = str(plan.query_one("#plan-confirm", Static).render())
        assert app.get_key_display(Binding("ctrl+o", "")) in shown
        assert app.get_key_display(Binding("ctrl+y", "")) not in shown
        keys = {key for key, b in plan.active_bindings.items() if b.binding.id == "confirm_publish"}
        assert keys == {"ctrl+o"}
