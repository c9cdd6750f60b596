"""The TUI's shape: the app owns navigation, so no screen imports another screen or the app.

Why: screens that create each other (Generating and Preview did) import each other, and a
screen that reads the app's module (Help read ``binding_catalogue``) closes a circle with it.
Screens ask the app to open the next one (``AgentTuiApp.open_*``) and reach it typed through
``agent_app``; ``tui.screens.base`` may name the app for the type checker only.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

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
