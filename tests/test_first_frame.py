"""The TUI's first frame from the issue cache, before pydantic and the configuration.

``engine.issues.forge.firstframe`` remembers which issue source the configuration chose; the next
start paints that source's cached issues as plain rows when the configuration's inputs
(``engine.core.configfiles.fingerprint``) and the git remote are unchanged, and never otherwise.
The engine then loads the same issues as ``Issue`` models and takes over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.core import configfiles, trust
from engine.core.config import load_config
from engine.core.errors import ConfigError
from engine.core.models import Issue
from engine.issues.forge.firstframe import CachedIssue, read_first_frame, record_path
from engine.issues.forge.github_source import GitHubIssueSource
from engine.issues.forge.registry import issue_source_for
from tests.conftest import git, trust_repo_config
from tui.app import AgentTuiApp
from tui.screens.issue import IssueScreen
from tui.screens.issues import IssuesScreen
from tui.widgets.issue_table import IssueTable

BASE = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _issues() -> list[Issue]:
    return [
        Issue(
            number=n,
            title=f"Issue {n}: \x1b[31mred\x1b[0m title",  # untrusted text, kept as it came
            body=f"body of {n}\nsecond line",
            labels=["bug", "api"][: n % 3],
            comments=n % 4,
            updated_at=BASE + timedelta(hours=n * 7) if n != 3 else None,
            source="github",
        )
        for n in range(1, 8)
    ]


def _github_source(repo: Path) -> GitHubIssueSource:
    source = issue_source_for(repo, load_config(repo), use_gh_cli=False)
    assert isinstance(source, GitHubIssueSource)
    return source


#: the issue source follows the remote (GitHub at a closed port: refreshes fail at once)
CONFIG = '[github]\napi_url = "http://127.0.0.1:9/api/v3"\ntimeout = 2\n'
REMOTE = "http://127.0.0.1:9/acme/widgets.git"


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """A repository whose GitHub issue cache holds seven issues."""
    git(git_repo, "remote", "add", "origin", REMOTE)
    (git_repo / ".agent-tui.toml").write_text(CONFIG)
    trust_repo_config(git_repo)  # its api_url applies once trusted
    source = _github_source(git_repo)
    source.cache.apply(_issues(), [], since=None, refreshed_at=BASE)
    return git_repo


def _remember(repo: Path) -> str:
    """What a start of the TUI records once the engine has chosen the source."""
    fingerprint = configfiles.fingerprint(repo)
    app = AgentTuiApp(repo, load_config(repo), fingerprint=fingerprint)
    app.remember_issue_source(_github_source(repo))
    assert record_path(repo).is_file()
    return fingerprint


def test_the_first_frame_holds_the_issues_the_engine_reads(repo: Path) -> None:
    fingerprint = _remember(repo)
    frame = read_first_frame(repo, fingerprint)
    assert frame is not None
    engine_issues = _github_source(repo).list_issues()
    fields = ("number", "title", "body", "labels", "comments", "updated_at")
    assert [tuple(getattr(i, f) for f in fields) for i in frame.issues] == [
        tuple(getattr(i, f) for f in fields) for i in engine_issues
    ]
    assert all(isinstance(i, CachedIssue) for i in frame.issues)
    assert frame.source_name == "github"
    assert frame.refreshed_at == _github_source(repo).last_refresh() == BASE
    assert frame.default_model == load_config(repo).default_model


def _edit_repo_config(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / ".agent-tui.toml").write_text(CONFIG.replace("timeout = 2", "timeout = 3"))
    trust_repo_config(repo)


def _add_user_config(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = configfiles.user_config_path()
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text('default_prompt = "backend-dev"\n')


def _point_the_env_var_elsewhere(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = repo.parent / "other.toml"
    other.write_text("")
    monkeypatch.setenv(configfiles.CONFIG_ENV_VAR, str(other))


def _revoke_trust(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trust.revoke(repo / ".agent-tui.toml")  # its api_url and repo no longer apply


def _change_remote(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git(repo, "remote", "set-url", "origin", REMOTE.replace("widgets", "gadgets"))


def _drop_cache(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _github_source(repo).cache.path.unlink()


def _corrupt_record(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record_path(repo).write_text("{not json")


def _corrupt_a_row(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(_github_source(repo).cache.path)) as db, db:
        db.execute("""UPDATE issues SET data = '{"number": "x"}' WHERE number = 2""")


@pytest.mark.parametrize(
    "change",
    [
        _edit_repo_config,
        _add_user_config,
        _point_the_env_var_elsewhere,
        _revoke_trust,
        _change_remote,
        _drop_cache,
        _corrupt_record,
        _corrupt_a_row,
    ],
)
def test_no_first_frame_when_the_last_choice_may_not_hold(
    repo: Path,
    change: Callable[[Path, pytest.MonkeyPatch], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(configfiles.CONFIG_ENV_VAR, raising=False)
    _remember(repo)
    assert read_first_frame(repo, configfiles.fingerprint(repo)) is not None
    change(repo, monkeypatch)
    assert read_first_frame(repo, configfiles.fingerprint(repo)) is None


def test_a_repository_named_in_the_config_does_not_depend_on_the_remote(repo: Path) -> None:
    (repo / ".agent-tui.toml").write_text(CONFIG + 'repo = "acme/widgets"\n')
    trust_repo_config(repo)
    _remember(repo)
    git(repo, "remote", "set-url", "origin", REMOTE.replace("widgets", "gadgets"))
    frame = read_first_frame(repo, configfiles.fingerprint(repo))
    assert frame is not None and len(frame.issues) == 7  # what the engine chooses too
    assert _github_source(repo).list_issues()[0].number == frame.issues[0].number


def test_the_fingerprint_follows_the_trust_of_the_repository_file(repo: Path) -> None:
    trusted = configfiles.fingerprint(repo)
    trust.revoke(repo / ".agent-tui.toml")
    assert configfiles.fingerprint(repo) != trusted
    trust_repo_config(repo)
    assert configfiles.fingerprint(repo) == trusted


async def test_the_app_paints_the_cached_rows_then_the_engine_takes_over(repo: Path) -> None:
    first = AgentTuiApp.for_repo(repo)
    assert first.first_frame is None  # no record yet: the configuration loads first
    async with first.run_test(size=(100, 30)) as pilot:
        await first.workers.wait_for_complete()
        await pilot.pause()
    assert record_path(repo).is_file()  # remembered for the next start

    app = AgentTuiApp.for_repo(repo)
    assert app.first_frame is not None
    async with app.run_test(size=(100, 30)) as pilot:
        while app.first_paint_at is None:
            await pilot.pause(0.01)
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, IssuesScreen)
        shown = screen.query_one(IssueTable).visible_issues()
        assert all(isinstance(i, Issue) for i in shown)  # the engine's issues now
        numbers = [i.number for i in shown]
        assert numbers == [7, 6, 5, 4, 2, 1, 3]  # newest update first, no date last
        assert app.config.github.timeout == 2
        assert app.model_name == app.config.default_model


async def test_an_issue_chosen_in_the_first_frame_opens_once_the_engine_is_loaded(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _remember(repo)
    app = AgentTuiApp.for_repo(repo)
    assert app.first_frame is not None
    start_engine = app.start_engine
    monkeypatch.setattr(app, "start_engine", lambda: None)  # held back: the first frame stays
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, IssuesScreen)
        table = screen.query_one(IssueTable)
        assert isinstance(table.current_issue, CachedIssue)
        await pilot.press("down", "enter")  # issue 6
        await pilot.pause()
        assert app.screen is screen  # nothing to open yet
        start_engine()
        await app.workers.wait_for_complete()
        await pilot.pause()
        # (its comments cannot be fetched from the closed port: an error may show above it)
        opened = [s for s in app.screen_stack if isinstance(s, IssueScreen)]
        assert [s.issue.number for s in opened] == [6]


async def test_a_config_broken_after_the_first_frame_ends_the_app_with_its_error(
    repo: Path,
) -> None:
    _remember(repo)
    app = AgentTuiApp.for_repo(repo)
    assert app.first_frame is not None
    (repo / ".agent-tui.toml").write_text(CONFIG.replace("timeout = 2", "timeout = 'soon'"))
    trust_repo_config(repo)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
    assert isinstance(app.startup_error, ConfigError)
    assert app.return_code == 7  # engine.cli.exitcodes.ERROR, as tui.cli reports it
