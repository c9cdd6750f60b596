"""Context selection: the tool's own config is never shown; the issue's language ranks first."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.context.build import build_context
from engine.context.prompts import load_profile
from engine.context.result import WHY_DEFINES
from tests.test_context import TINY_PROFILE, GemmaCounter, issue, write
from tests.test_context import counter as counter  # noqa: F401 - the fixture

pytestmark = pytest.mark.model


def build(repo: Path, counter: GemmaCounter, title: str, body: str) -> object:
    return build_context(
        repo,
        issue(title=title, body=body),
        load_profile("tiny", repo),
        count_messages=counter.count_messages,
        count_text=counter.count_text,
        n_ctx=8192,
        max_tokens=1024,
    )


def test_the_tools_own_config_is_never_shown(git_repo: Path, counter: GemmaCounter) -> None:
    write(
        git_repo,
        {
            ".agent-tui/prompts/tiny.md": TINY_PROFILE,
            ".agent-tui.toml": 'default_model = "gemma3-270m"\n[publish]\nbase = "main"\n',
            "app/main.py": "from fastapi import FastAPI\n\napp = FastAPI()\n",
        },
    )
    result = build(
        git_repo, counter, "Change default_model", "Set `default_model` in `.agent-tui.toml`."
    )
    sent = "\n".join(m["content"] for m in result.messages)  # type: ignore[attr-defined]
    assert ".agent-tui.toml" not in result.shown_files  # type: ignore[attr-defined]
    assert ".agent-tui.toml" not in sent.split("BEGIN ISSUE")[0]  # not even in the tree


def test_a_python_issue_gets_python_files_before_the_frontends(
    git_repo: Path, counter: GemmaCounter
) -> None:
    write(
        git_repo,
        {
            ".agent-tui/prompts/tiny.md": TINY_PROFILE,
            "frontend/src/client/types.tsx": "export type Item = { id: number; title: string }\n"
            * 3,
            "frontend/src/routes/items.tsx": "// list the Item rows\nexport function Items() {}\n",
            "backend/app/models.py": "class Item:\n    id: int\n    title: str\n",
            "backend/app/api/routes/items.py": "def read_items():\n    return []\n",
            "backend/app/main.py": "from fastapi import FastAPI\n\napp = FastAPI()\n",
        },
    )
    result = build(
        git_repo,
        counter,
        "Add a price to Item",
        "The `Item` model needs a `price` field; return it from `read_items` too.",
    )
    reasons = {f.path: f.reason for f in result.shown}  # type: ignore[attr-defined]
    shown = list(reasons)
    # the Python definitions of the names the issue uses come first ...
    assert reasons["backend/app/models.py"] == WHY_DEFINES
    assert reasons["backend/app/api/routes/items.py"] == WHY_DEFINES
    # ... and the frontend's `type Item` is no definition of the Python issue's `Item`
    assert reasons.get("frontend/src/client/types.tsx") != WHY_DEFINES
    frontend = [i for i, p in enumerate(shown) if p.endswith(".tsx")]
    assert not frontend or min(frontend) > shown.index("backend/app/api/routes/items.py")


def test_the_tool_s_own_files_do_not_change_the_ranking(
    git_repo: Path, counter: GemmaCounter
) -> None:
    """More local issues (``.agent-tui/issues/*.md``, whose names repeat the issue's words)
    must not move the project's files: the same project gives the same prompt."""
    files: dict[str, str | bytes] = {
        ".agent-tui/prompts/tiny.md": TINY_PROFILE,
        "app/config.py": "class Settings:\n    cors_origins: list[str] = []\n",
        "app/main.py": "from fastapi import FastAPI\n\napp = FastAPI()\n",
        "app/cors.py": "def allow(origin):\n    return origin\n",
        "README.md": "# app\nSettings and CORS.\n",
    }
    write(git_repo, files)
    title, body = "Configure CORS from settings", "Add `cors_origins` to the settings."
    before = build(git_repo, counter, title, body)
    write(
        git_repo,
        {f".agent-tui/issues/{n:03d}-cors-settings-main.md": f"# CORS {n}\n" for n in range(8)},
    )
    after = build(git_repo, counter, title, body)
    assert [(f.path, f.score) for f in after.shown] == [(f.path, f.score) for f in before.shown]
    assert after.messages == before.messages
