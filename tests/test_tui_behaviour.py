"""TUI behaviour that needs no model: key maps, the command palette, errors, offline issues,
and the issue filter behind the Issues screen."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input
from textual.worker import WorkerFailed

from engine.config import load_config
from engine.demo import create_demo
from engine.forge.local import LocalIssueSource
from engine.issuefilter import IssueFilter, sort_issues
from engine.models import ChangeProposal, FileChange, Issue
from engine.store import Store
from tests.conftest import git, unpin_demo
from tests.github_fake import FAKE_TOKEN, FakeGitHub
from tui.app import AgentTuiApp, binding_catalogue, check_keymap
from tui.screens.error import ErrorModal
from tui.screens.help import HelpScreen
from tui.screens.issues import IssuesScreen
from tui.screens.preview import PreviewScreen
from tui.screens.publish_plan import PublishPlanScreen
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
    monkeypatch.setenv("GH_TOKEN", FAKE_TOKEN)
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
