"""GitHub issues through ghapi against the loopback GitHub: pages, ``since``, offline, errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import engine.issues.forge.github as gh
from engine.cli import main as cli_main
from engine.core.config import load_config
from engine.core.errors import ConfigError, GitHubError, IssueNotFoundError
from engine.issues.forge.github import GitHubRepo, parse_remote_url, resolve_repo
from engine.issues.forge.github_source import GitHubIssueSource
from engine.issues.forge.github_token import Token, resolve_token
from engine.issues.forge.local import LocalIssueSource
from engine.issues.forge.registry import cache_path, issue_source_for
from tests.conftest import REPO_ROOT, git
from tests.github_fake import FAKE_TOKEN, FakeGitHub


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/widgets.git", ("github.com", "acme", "widgets")),
        ("https://github.com/acme/widgets/", ("github.com", "acme", "widgets")),
        ("https://x-access-token@github.com/acme/widgets", ("github.com", "acme", "widgets")),
        ("http://127.0.0.1:8123/acme/widgets.git", ("127.0.0.1:8123", "acme", "widgets")),
        ("ssh://git@github.com:22/acme/widgets.git", ("github.com", "acme", "widgets")),
        ("git@github.com:acme/widgets.git", ("github.com", "acme", "widgets")),
        ("git@ghe.corp.example:team/svc.git", ("ghe.corp.example", "team", "svc")),
        ("https://GHE.corp.example/team/svc", ("ghe.corp.example", "team", "svc")),
        ("/srv/git/widgets.git", None),
        ("../widgets.git", None),
        ("file:///srv/git/acme/widgets.git", None),
        ("https://github.com/acme", None),
        ("", None),
    ],
)
def test_parse_remote_url(url: str, expected: tuple[str, str, str] | None) -> None:
    assert parse_remote_url(url) == expected


def test_resolve_repo_github_enterprise_and_override() -> None:
    assert resolve_repo("git@github.com:acme/w.git") == GitHubRepo("acme", "w")
    # an Enterprise host is GitHub only when api_url names it
    assert resolve_repo("https://ghe.corp/acme/w.git") is None
    ghe = resolve_repo("https://ghe.corp/acme/w.git", api_url="https://ghe.corp/api/v3")
    assert ghe == GitHubRepo("acme", "w", "https://ghe.corp/api/v3")
    assert resolve_repo("git@github.com:acme/w.git", api_url="https://ghe.corp/api/v3") is None
    assert resolve_repo("/srv/w.git", repo="o/n") == GitHubRepo("o", "n")
    assert gh.api_url_for_host("github.com") == "https://api.github.com"
    assert gh.api_url_for_host("ghe.corp") == "https://ghe.corp/api/v3"


def test_token_order_and_gh_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no gh CLI
    ghe = "https://ghe.corp/api/v3"
    assert resolve_token() is None
    monkeypatch.setenv("GITHUB_TOKEN", "from-github-token")
    assert resolve_token() == Token("from-github-token", "GITHUB_TOKEN")
    monkeypatch.setenv("GH_TOKEN", "from-gh-token")
    assert resolve_token().source == "GH_TOKEN"  # type: ignore[union-attr]
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", "from-enterprise")
    token = resolve_token(ghe, configured_api_url=ghe)
    assert token == Token("from-enterprise", "GH_ENTERPRISE_TOKEN")
    assert "from-gh-token" not in repr(resolve_token())
    for var in ("GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN"):
        monkeypatch.delenv(var)
    # a gh CLI on PATH: asked with the host, its answer used
    script = tmp_path / "gh"
    log = tmp_path / "gh.args"
    script.write_text(f'#!/bin/sh\necho "$@" > {log}\necho gho_fromcli\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    token = resolve_token(ghe, configured_api_url=ghe)
    assert token == Token("gho_fromcli", "gh auth token")
    assert log.read_text().split() == ["auth", "token", "--hostname", "ghe.corp"]
    assert resolve_token(use_gh=False) is None


def _source(fake: FakeGitHub, tmp_path: Path, token: str | None = FAKE_TOKEN) -> GitHubIssueSource:
    repo = GitHubRepo(fake.owner, fake.repo, fake.api_url)
    return GitHubIssueSource(
        repo, tmp_path / "cache.sqlite", Token(token, "GH_TOKEN") if token else None, retries=0
    )


def test_refresh_reads_every_page_skips_pull_requests(
    github_fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gh, "PER_PAGE", 2)
    github_fake.add_issue(
        "Add a health endpoint",
        "GET /health returns ok",
        labels=["api", "good first issue"],
        assignees=["alice", "bob"],
        milestone="v1.0",
        comments=["please add a test", "+1"],
    )
    for n in range(2, 6):
        github_fake.add_issue(f"issue {n}")
    github_fake.add_issue("closed one", state="closed")
    github_fake.pulls[7] = {}  # a pull request appears in the issues endpoint too
    github_fake.issues[7] = {**github_fake.issues[2], "number": 7, "pull_request": {"url": "x"}}

    source = _source(github_fake, tmp_path)
    result = source.refresh()
    assert (result.fetched, result.total, result.offline) == (5, 5, False)
    issues = source.list_issues()
    assert [i.number for i in issues] == [5, 4, 3, 2, 1]  # newest update first
    first = source.get_issue(1)
    assert first.labels == ["api", "good first issue"]
    assert first.assignees == ["alice", "bob"]
    assert first.milestone == "v1.0"
    assert first.comments == 2
    assert first.updated_at is not None and first.updated_at.year == 2024
    assert first.url == f"{github_fake.url}/acme/widgets/issues/1"
    assert first.source == "github"
    pages = github_fake.api_requests("GET", r"/issues$")
    assert [r.query["page"] for r in pages] == ["1", "2", "3"]
    assert all(r.query["state"] == "open" and r.query["per_page"] == "2" for r in pages)
    assert all(r.headers["authorization"] == f"token {FAKE_TOKEN}" for r in pages)


def test_incremental_refresh_asks_since_and_drops_closed(
    github_fake: FakeGitHub, tmp_path: Path
) -> None:
    for n in range(1, 4):
        github_fake.add_issue(f"issue {n}")
    source = _source(github_fake, tmp_path)
    source.refresh()
    newest = github_fake.issues[3]["updated_at"]
    github_fake.update_issue(1, title="issue 1, retitled")
    github_fake.update_issue(2, state="closed")
    github_fake.add_issue("issue 4")
    result = source.refresh()
    last = github_fake.api_requests("GET", r"/issues$")[-1]
    assert last.query["since"] == newest
    assert last.query["state"] == "all"
    # 1 changed, 2 closed, 4 new, and 3 again: `since` is inclusive, 3 is at the boundary
    assert result.fetched == 4
    assert "1 closed" in result.message
    assert {i.number: i.title for i in source.list_issues()} == {
        1: "issue 1, retitled",
        3: "issue 3",
        4: "issue 4",
    }
    # nothing changed: the next refresh gets only the item at the new `since` boundary
    again = source.refresh()
    assert (again.fetched, again.total) == (1, 3)


def test_offline_serves_cache_instantly_with_last_refresh(
    github_fake: FakeGitHub, tmp_path: Path
) -> None:
    github_fake.add_issue("cached issue", comments=["a comment"])
    source = _source(github_fake, tmp_path)
    first = source.refresh()
    assert [c.body for c in source.comments(1)] == ["a comment"]
    github_fake.stop()
    result = source.refresh()
    assert result.offline and result.total == 1
    assert result.refreshed_at == first.refreshed_at
    assert "offline" in result.message and "last refresh" in result.message
    # a fresh process (new source object) lists the cache without any request
    before = len(github_fake.requests)
    again = _source(github_fake, tmp_path)
    assert [i.title for i in again.list_issues()] == ["cached issue"]
    assert again.last_refresh() == first.refreshed_at
    assert [c.body for c in again.comments(1)] == ["a comment"]  # cached comments offline
    assert len(github_fake.requests) == before
    with pytest.raises(GitHubError) as info:
        again.comments(99)  # never cached: the network error is reported
    assert info.value.network and info.value.title == "GitHub unreachable"


def test_rate_limit_and_auth_errors_in_githubs_words(
    github_fake: FakeGitHub, tmp_path: Path
) -> None:
    github_fake.add_issue("one")
    source = _source(github_fake, tmp_path)
    source.refresh()
    github_fake.rate_limit()
    with pytest.raises(GitHubError) as info:
        source.refresh()
    err = info.value
    assert err.status == 403 and err.title == "GitHub rate limit"
    assert "API rate limit exceeded for 127.0.0.1" in err.message
    assert "resets at" in err.message
    assert source.list_issues()[0].title == "one"  # the cache is untouched

    github_fake.token = "ghp_the_token_github_now_expects"  # ours is revoked
    with pytest.raises(GitHubError) as info:
        source.refresh()
    assert info.value.status == 401 and info.value.github_message == "Bad credentials"
    assert info.value.title == "GitHub authentication failed"
    assert FAKE_TOKEN not in info.value.render()


def test_anonymous_read_says_so_and_private_repo_hint(
    github_fake: FakeGitHub, tmp_path: Path
) -> None:
    github_fake.add_issue("public issue")
    source = _source(github_fake, tmp_path, token=None)
    result = source.refresh()
    assert "anonymously" in result.message
    assert "anonymous" in source.describe()
    assert not github_fake.requests[-1].authenticated
    github_fake.public = False
    with pytest.raises(GitHubError) as info:
        source.refresh(full=True)
    assert info.value.status == 404
    assert "needs a token" in info.value.hint


def test_get_issue_fetches_uncached_and_refuses_pull_requests(
    github_fake: FakeGitHub, tmp_path: Path
) -> None:
    github_fake.add_issue("later issue", "body text")
    source = _source(github_fake, tmp_path)
    assert source.get_issue(1).body == "body text"  # not refreshed yet: fetched
    assert source.list_issues()[0].number == 1  # and cached
    github_fake.issues[2] = {**github_fake.issues[1], "number": 2, "pull_request": {}}
    with pytest.raises(IssueNotFoundError, match="pull request"):
        source.get_issue(2)
    with pytest.raises(IssueNotFoundError, match="no issue #42"):
        source.get_issue(42)


def test_corrupt_cache_is_replaced(github_fake: FakeGitHub, tmp_path: Path) -> None:
    (tmp_path / "cache.sqlite").write_bytes(b"this is not a database" * 100)
    github_fake.add_issue("fresh")
    source = _source(github_fake, tmp_path)
    assert source.list_issues() == []
    source.refresh()
    assert [i.title for i in source.list_issues()] == ["fresh"]


def _connected(git_repo: Path, fake: FakeGitHub, tmp_path: Path, mp: pytest.MonkeyPatch) -> None:
    fake.connect_repo(git_repo, push=False)
    mp.setenv("AGENT_TUI_CONFIG", str(fake.write_config(tmp_path / "config.toml")))
    mp.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)
    mp.setenv("PATH", os.path.dirname(git_path()))  # git only: no gh CLI


def git_path() -> str:
    import shutil

    found = shutil.which("git")
    assert found
    return found


def test_registry_picks_github_or_local(
    git_repo: Path, github_fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = issue_source_for(git_repo, load_config(git_repo))
    assert isinstance(local, LocalIssueSource)  # no remote: local Markdown issues
    _connected(git_repo, github_fake, tmp_path, monkeypatch)
    source = issue_source_for(git_repo, load_config(git_repo))
    assert isinstance(source, GitHubIssueSource)
    assert source.repo == GitHubRepo("acme", "widgets", github_fake.api_url)
    assert source.token is not None and source.token.source == "GH_ENTERPRISE_TOKEN"
    assert cache_path(git_repo).is_relative_to(git_repo / ".git")
    git(git_repo, "remote", "set-url", "origin", "/srv/elsewhere.git")
    config = load_config(git_repo)
    assert isinstance(issue_source_for(git_repo, config), LocalIssueSource)
    config.github.issues = "github"
    with pytest.raises(ConfigError, match="not on GitHub"):
        issue_source_for(git_repo, config)
    config.github.repo = "acme/widgets"
    assert isinstance(issue_source_for(git_repo, config), GitHubIssueSource)


def test_issues_command_json_label_filter_and_offline(
    git_repo: Path,
    github_fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _connected(git_repo, github_fake, tmp_path, monkeypatch)
    github_fake.add_issue("api work", labels=["api"])
    github_fake.add_issue("docs work", labels=["docs"])
    assert cli_main(["issues", "--repo", str(git_repo), "--json", "--label", "api"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "github" and out["stale"] is False
    assert [i["title"] for i in out["issues"]] == ["api work"]
    assert out["refreshed_at"]

    github_fake.stop()
    before = len(github_fake.requests)
    assert cli_main(["issues", "--repo", str(git_repo), "--offline"]) == 0
    captured = capsys.readouterr()
    assert "docs work" in captured.out and "api work" in captured.out
    assert "last refresh" in captured.err
    assert len(github_fake.requests) == before

    github_fake.start()
    github_fake.fail(401, path="/issues")
    assert cli_main(["issues", "--repo", str(git_repo), "--json"]) == 7
    captured = capsys.readouterr()
    assert "GitHub answered 401" in captured.err and "Bad credentials" in captured.err
    out = json.loads(captured.out)
    assert out["stale"] is True and out["error"]["status"] == 401
    assert len(out["issues"]) == 2  # the cache is still listed


def test_the_github_client_leaves_the_process_environment_alone(tmp_path: Path) -> None:
    """ghapi.all imports ghapi.actions, which fills os.environ with GitHub Actions' context
    (GITHUB_REPOSITORY=octocat/Hello-World) that every later git process and test command would
    inherit. A fresh interpreter creating the client must see no variable appear."""
    code = (
        "import os\n"
        "before = dict(os.environ)\n"
        "from engine.issues.forge.github import _ghapi\n"
        "_ghapi('http://127.0.0.1:9', 'o', 'r', None)\n"
        "added = sorted(set(os.environ) - set(before))\n"
        "print(added)\n"
        "raise SystemExit(1 if added else 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTEXT_", "GITHUB_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
