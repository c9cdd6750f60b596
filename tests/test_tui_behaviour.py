"""TUI behaviour that needs no model: key maps, the command palette, errors, offline issues,
the issue filter behind the Issues screen, the Preview's keys and the Models screen."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static
from textual.worker import WorkerFailed

from engine.core.config import load_config
from engine.core.models import ChangeProposal, FileChange, Issue
from engine.flow.demo import create_demo
from engine.issues.forge.local import LocalIssueSource
from engine.issues.issuefilter import IssueFilter, sort_issues
from engine.publish.store import Store
from tests.conftest import git, unpin_demo
from tests.github_fake import FAKE_TOKEN, FakeGitHub
from tui.app import AgentTuiApp, binding_catalogue, check_keymap
from tui.screens.error import ErrorModal
from tui.screens.help import HelpScreen
from tui.screens.issues import IssuesScreen
from tui.screens.models import ModelsScreen
from tui.screens.preview import PreviewScreen
from tui.screens.publish_plan import PublishPlanScreen
from tui.widgets.findings_panel import render_findings
from tui.widgets.issue_table import IssueTable
from tui.widgets.status_bar import StatusBar


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    return create_demo(tmp_path / "demo").repo


def with_keymap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keymap: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[tui]\nkeymap = {keymap}\n")
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))


# -- key maps --------------------------------------------------------------------------


def test_every_binding_has_an_id_and_a_description() -> None:
    ids = []
    for _title, _cls, bindings in binding_catalogue():
        for b in bindings:
            assert b.id, f"{b.key} -> {b.action} has no id"
            assert b.description, f"{b.id} has no description"
            ids.append(b.id)
    assert "confirm_publish" in ids and "generate" in ids and "cancel" in ids


@pytest.mark.parametrize(
    ("keymap", "problem"),
    [
        ({"generat": "g"}, "unknown binding id 'generat'"),
        ({"confirm_publish": "enter"}, "confirm_publish cannot be 'enter'"),
        ({"confirm_publish": "space"}, "confirm_publish cannot be 'space'"),
        ({"confirm_publish": "ctrl+g,y"}, "confirm_publish cannot be 'y'"),
    ],
)
def test_bad_keymaps_are_refused(keymap: dict[str, str], problem: str) -> None:
    problems = check_keymap(keymap)
    assert any(problem in p for p in problems), problems


def test_good_keymap_has_no_problem() -> None:
    assert check_keymap({"generate": "ctrl+g", "confirm_publish": "ctrl+o"}) == []


async def test_keymap_remaps_a_binding(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_keymap(tmp_path, monkeypatch, '{ filter = "f" }')
    app = AgentTuiApp(demo_repo, load_config(demo_repo))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("slash")  # the old key no longer filters
        assert not isinstance(app.focused, Input)
        await pilot.press("f")
        assert isinstance(app.focused, Input) and app.focused.id == "filter"
        await pilot.press("escape", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "f" in str(app.screen.query_one("#help-table").render())


async def test_unsafe_confirm_key_is_ignored_with_an_error(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_keymap(tmp_path, monkeypatch, '{ confirm_publish = "enter" }')
    app = AgentTuiApp(demo_repo, load_config(demo_repo))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ErrorModal)
        assert app.screen.error_title == "Key map error"
        assert "confirm_publish" in app.screen.message and app.screen.hint
        assert "confirm_publish" not in app._keymap


# -- the command palette -----------------------------------------------------------------


async def test_palette_lists_screen_actions_but_never_the_publish_confirmation(
    demo_repo: Path,
) -> None:
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Filter", "Sort", "Refresh", "Help", "History", "Models"} <= set(titles)
        issue = app.workspace.issue_source().get_issue(1)
        run = app.workspace.start(issue, comments=[])
        proposal = ChangeProposal(
            branch_suffix="health",
            commit_message="feat: add health",
            pr_title="feat: add health",
            pr_body="Closes #1",
            files=[FileChange(path="app/health.py", content='"""Health."""\n')],
        )
        run.review = run._review(proposal)
        await app.push_screen(PreviewScreen(run))
        await pilot.press("p")
        plan = app.screen
        assert isinstance(plan, PublishPlanScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert plan.state == "ready"
        titles = [c.title for c in app.get_system_commands(plan)]
        assert "Acknowledge warnings" in titles
        assert not any("Publish" in t for t in titles)


# -- errors and offline ------------------------------------------------------------------


async def test_a_broken_issue_file_shows_the_error_modal(demo_repo: Path) -> None:
    (demo_repo / ".agent-tui" / "issues" / "009-bad.md").write_text("no front matter\n")
    app = AgentTuiApp(demo_repo, load_config(demo_repo))
    async with app.run_test(size=(80, 24)) as pilot:
        # the loading worker is expected to fail; waiting on it re-raises its error when the
        # wait starts before the app has handled the failure (a race, not a test failure)
        with contextlib.suppress(WorkerFailed):
            await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ErrorModal)
        assert "009-bad.md" in app.screen.message
        assert app.screen.hint
        await pilot.press("escape")
        assert isinstance(app.screen, IssuesScreen)


async def test_cached_github_issues_stay_usable_offline(
    tmp_path: Path, github_fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = unpin_demo(create_demo(tmp_path / "demo").repo)
    git(repo, "remote", "remove", "origin")
    github_fake.connect_repo(repo)
    for n in range(3):
        github_fake.add_issue(f"Issue number {n + 1}", "body", labels=["bug"])
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(github_fake.write_config(tmp_path / "c.toml")))
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)
    app = AgentTuiApp(repo, load_config(repo))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, IssuesScreen)
        assert screen.query_one(IssueTable).row_count == 3
        assert screen.query_one(StatusBar).badge("offline") is None
        github_fake.stop()
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.query_one(StatusBar).badge("offline") == "offline"
        assert screen.query_one(IssueTable).row_count == 3
        assert "OFFLINE" in str(screen.query_one("#summary").render())


# -- the issue filter ------------------------------------------------------------------


def _issue(number: int, title: str, body: str = "", labels: list[str] | None = None) -> Issue:
    return Issue(number=number, title=title, body=body, labels=labels or [])


ISSUES = [
    _issue(1, "Add a /health endpoint", "liveness probe", ["enhancement"]),
    _issue(2, "Add a User model and CRUD", "users table", ["database"]),
    _issue(12, "Paginate items", "skip and limit", ["api"]),
    _issue(120, "Configure CORS", "frontend origin", ["config"]),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [1, 2, 12, 120]),
        ("health", [1]),
        ("HEALTH", [1]),
        ("hlth", [1]),  # letters in order in the title
        ("database", [2]),  # a label
        ("probe", [1]),  # the body
        ("add user", [2]),  # every term must match
        ("#12", [12, 120]),  # number prefix
        ("#2", [2]),
        ("zzz", []),
    ],
)
def test_issue_filter(query: str, expected: list[int]) -> None:
    index = IssueFilter(ISSUES)
    assert [index.issues[i].number for i in index.filter(query)] == expected


def test_typing_narrows_like_a_fresh_search() -> None:
    index = IssueFilter(ISSUES * 3)
    fresh = IssueFilter(ISSUES * 3)
    for query in ["a", "ad", "add", "add ", "add u", "add us", "#", "#1", "#12", "c", "co"]:
        assert index.filter(query) == IssueFilter(fresh.issues).filter(query), query


@pytest.mark.parametrize("key", ["updated", "number", "comments", "title"])
def test_sort_keys(key: Any) -> None:
    out = sort_issues(ISSUES, key)
    assert sorted(i.number for i in out) == [1, 2, 12, 120]
    if key == "number":
        assert [i.number for i in out] == [120, 12, 2, 1]
    if key == "title":
        assert out[0].title == "Add a /health endpoint"


# -- the demo: publishing without GitHub ---------------------------------------------------


async def test_demo_publish_pushes_to_the_bare_origin_and_queues_the_pr(demo_repo: Path) -> None:
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        run = app.workspace.start(app.workspace.issue_source().get_issue(1), comments=[])
        run.review = run._review(
            ChangeProposal(
                branch_suffix="health",
                commit_message="feat: add a /health endpoint",
                pr_title="feat: add a /health endpoint",
                pr_body="Closes #1",
                files=[FileChange(path="app/health.py", content='"""Health."""\n')],
            )
        )
        await app.push_screen(PreviewScreen(run))
        await pilot.press("p")
        plan = app.screen
        assert isinstance(plan, PublishPlanScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert plan.state == "ready" and plan.plan.github is None
        await pilot.press("ctrl+y")  # warnings not acknowledged yet: nothing happens
        await app.workers.wait_for_complete()
        assert plan.state == "ready"
        await pilot.press("a", "ctrl+y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert plan.state == "queued", plan.result.message
        assert "outbox" in str(plan.query_one("#plan-confirm").render())
    origin = demo_repo.parent / "origin.git"
    assert git(origin, "branch", "--list", "agent/1-health").strip() == "agent/1-health"
    jobs = Store.for_repo(demo_repo).pending_jobs()
    assert [j.branch for j in jobs] == ["agent/1-health"] and jobs[0].state == "pushed"


# -- the Preview's keys: fix, re-check, split/unified ------------------------------------------

MAIN_PY = (
    '"""FastAPI application entry point."""\n\nfrom fastapi import FastAPI\n\n'
    "from app.api.v1.endpoints import items\nfrom app.config import settings\n"
    "from app.database import Base, engine\n\nBase.metadata.create_all(bind=engine)\n\n"
    "app = FastAPI(title=settings.app_name, version='1.0')\n"
    'app.include_router(items.router, prefix="/api/v1/items", tags=["items"])\n'
)


def plain(renderable: Any, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(renderable)
    return console.export_text()


def shown_text(widget: Widget) -> str:
    """What a ``Static`` shows, as plain text."""
    assert isinstance(widget, Static)
    return plain(widget.content)


async def open_preview(pilot: Pilot[Any], pr_body: str = "Closes #1") -> PreviewScreen:
    """The Preview of a one-file proposal (a change to app/main.py) for demo issue 1."""
    app: Any = pilot.app
    await app.workers.wait_for_complete()
    run = app.workspace.start(app.workspace.issue_source().get_issue(1), comments=[])
    run.review = run._review(
        ChangeProposal(
            branch_suffix="app-version",
            commit_message="feat: give the app a version",
            pr_title="feat: give the app a version",
            pr_body=pr_body,
            files=[FileChange(path="app/main.py", content=MAIN_PY)],
        )
    )
    screen = PreviewScreen(run)
    await app.push_screen(screen)
    await pilot.pause()
    return screen


async def press_and_check(pilot: Pilot[Any], key: str) -> None:
    """Press ``key``, then wait for the checks' worker and the screen's update."""
    await pilot.press(key)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def local_app(repo: Path) -> AgentTuiApp:
    return AgentTuiApp(repo, load_config(repo), source=LocalIssueSource(repo))


async def test_preview_f_applies_the_deterministic_fixes(demo_repo: Path) -> None:
    app = local_app(demo_repo)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_preview(pilot, pr_body="Shows the version in the OpenAPI page.")
        findings = screen.query_one("#findings-body")
        assert "closes-missing" in shown_text(findings)
        await press_and_check(pilot, "f")
        proposal = screen.review.proposal
        assert "Closes #1" in proposal.pr_body
        assert proposal.pr_body.startswith("Shows the version")  # the rest is kept
        assert "closes-missing" not in {f.code for f in screen.review.findings}
        # the panel shows the new review (not "checking…", not the old findings)
        assert shown_text(findings) == plain(render_findings(screen.review.findings))
        assert "closes-missing" not in shown_text(findings)
        await press_and_check(pilot, "f")  # nothing left to fix: the proposal stays as is
        assert screen.review.proposal == proposal


async def test_preview_c_rechecks_against_the_repository_as_it_is_now(demo_repo: Path) -> None:
    app = local_app(demo_repo)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_preview(pilot)
        findings = screen.query_one("#findings-body")
        assert "uncommitted-changes" not in shown_text(findings)
        # the user edits the file the proposal changes, outside agent-tui
        main = demo_repo / "app" / "main.py"
        main.write_text(main.read_text() + "# local experiment\n")
        await pilot.pause()
        assert "uncommitted-changes" not in shown_text(findings)  # nothing re-ran by itself
        await press_and_check(pilot, "c")
        codes = {f.code for f in screen.review.findings}
        assert "uncommitted-changes" in codes
        assert "uncommitted-changes app/main.py" in shown_text(findings)


async def test_preview_v_toggles_unified_and_side_by_side(demo_repo: Path) -> None:
    app = local_app(demo_repo)
    async with app.run_test(size=(100, 30)) as pilot:  # narrow: unified by default
        screen = await open_preview(pilot)
        body = screen.query_one("#diff-body")
        context = "Base.metadata.create_all(bind=engine)"  # unchanged: shown on both sides

        def layout() -> str:
            text = shown_text(body)
            assert "title=settings.app_name, version='1.0'" in text
            assert context in text
            unified = "@@ -" in text
            split = any(line.count(context) == 2 for line in text.splitlines())
            assert unified != split, text
            return "unified" if unified else "side by side"

        assert layout() == "unified"
        await pilot.press("v")
        await pilot.pause()
        assert layout() == "side by side"
        await pilot.press("v")
        await pilot.pause()
        assert layout() == "unified"


# -- the Models screen -------------------------------------------------------------------------


async def test_models_enter_makes_the_highlighted_profile_active(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[models.served-coder]\ndescription = "a second profile"\nbackend = "ollama"\n'
        'model = "qwen2.5-coder:7b"\nhost = "http://127.0.0.1:9"\n'
    )
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    app = local_app(demo_repo)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        assert app.model_name == "gemma3-270m"  # the demo's default_model
        screen = ModelsScreen(run_doctor=False)
        await app.push_screen(screen)
        await pilot.pause()
        table = screen.query_one("#models", DataTable)
        assert [str(k.value) for k in table.rows] == ["gemma3-270m", "served-coder"]
        assert table.get_row("gemma3-270m")[0] == "●"
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.model_name == "served-coder"
        assert app.workspace.model_name == "served-coder"  # what the next generation uses
        assert screen.query_one(StatusBar).badge("model") == "served-coder: not loaded"
        assert table.get_row("served-coder")[0] == "●" and table.get_row("gemma3-270m")[0] == ""
        await pilot.press("escape")
        assert isinstance(app.screen, IssuesScreen)
        assert app.screen.query_one(StatusBar).badge("model") == "served-coder: not loaded"
