"""GitHub as it really behaves, against the loopback fake: what the happy path never shows.

Draft pull requests refused by a repository, secondary rate limits (``Retry-After``), a 200
whose body is a proxy's HTML page, a bug inside the client (not a network failure), and a
head branch in a fork owned by the same organisation (``head_repo``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

import engine.issues.forge.github as gh
from engine.cli import main as cli_main
from engine.core.errors import GitHubError
from engine.core.models import ChangeProposal
from engine.issues.forge.github import GitHubRepo, api_host
from engine.issues.forge.github_source import GitHubIssueSource
from engine.issues.forge.github_token import Token
from engine.publish.plan import build_plan
from engine.publish.records import PublishJob
from engine.publish.runner import execute, outbox, sync
from engine.publish.steps import RETRY_NOT_BEFORE, PublishProgress
from engine.publish.store import Store
from tests import test_publish
from tests.cli_repo import issue_body, llama_profile, prepare_repo, server_profile
from tests.conftest import git
from tests.github_fake import FAKE_TOKEN, FakeGitHub
from tests.test_github_source import _connected
from tests.test_publish import PROPOSAL, Project

#: the publishing tests' fixture: a repository whose origin is the fake, a token, issue #1
project = test_publish.project


def _source(fake: FakeGitHub, tmp_path: Path) -> GitHubIssueSource:
    repo = GitHubRepo(fake.owner, fake.repo, fake.api_url)
    return GitHubIssueSource(repo, tmp_path / "cache.sqlite", Token(FAKE_TOKEN, "GH_TOKEN"))


def _api(fake: FakeGitHub) -> Any:
    """The (process-wide, cached) ghapi client the app uses for the fake."""
    return gh._ghapi(fake.api_url, fake.owner, fake.repo, FAKE_TOKEN)[0]


# ----------------------------------------------------------------------------------------------
# draft pull requests refused


def test_draft_refused_opens_ready_says_so_and_remembers_the_repository(
    project: Project,
) -> None:
    fake = project.fake
    fake.drafts_supported = False
    plan = project.plan()
    assert plan.draft  # [publish] draft defaults to true
    steps: list[PublishProgress] = []
    result = execute(plan, progress=steps.append)

    assert result.published, result.message
    (pull,) = fake.open_pulls()
    assert pull["draft"] is False
    posts = fake.api_requests("POST", r"/pulls$")
    assert [r.body["draft"] for r in posts] == [True, False]  # tried as a draft, then ready
    note = "opened ready for review: GitHub does not support draft pull requests in acme/widgets"
    assert note in result.message
    assert any(note in s.detail for s in steps if s.step == "pull_request")
    assert not any(s.state == "failed" for s in steps)
    store = Store.for_repo(project.repo)
    (record,) = store.generations()
    assert record.outcome == "published" and note in record.detail
    assert store.jobs()[0].draft is False  # the job says what was opened

    # remembered for this repository: the next plan says so and goes ready at once
    other = {**PROPOSAL, "branch_suffix": "second-change"}
    again = project.plan(proposal=other)
    assert again.draft is False and again.drafts_unsupported
    assert any("does not support draft pull requests in acme/widgets" in w for w in again.warnings)
    assert "does not support drafts" in again.describe()
    before = len(fake.api_requests("POST", r"/pulls$"))
    second = execute(again)
    assert second.published
    new_posts = fake.api_requests("POST", r"/pulls$")[before:]
    assert [r.body["draft"] for r in new_posts] == [False]


def test_an_explicit_ready_publish_never_mentions_drafts(project: Project) -> None:
    project.fake.drafts_supported = False
    result = execute(project.plan(draft=False))
    assert result.published and "draft" not in result.message
    assert [r.body["draft"] for r in project.fake.api_requests("POST", r"/pulls$")] == [False]


def test_a_queued_draft_job_synced_later_falls_back_too(project: Project) -> None:
    fake = project.fake
    fake.stop()  # offline from the start: the push fails and the job is queued
    result = execute(project.plan(ask_github=False))
    assert result.queued
    fake.start()
    fake.drafts_supported = False
    (done,) = sync(project.repo, project.config())
    assert done.published and "ready for review" in done.message
    assert fake.open_pulls()[0]["draft"] is False
    assert outbox(project.repo) == []


# ----------------------------------------------------------------------------------------------
# secondary rate limits


def test_secondary_rate_limit_honours_retry_after_not_the_primary_reset(
    github_fake: FakeGitHub, tmp_path: Path
) -> None:
    github_fake.add_issue("one")
    source = _source(github_fake, tmp_path)
    source.refresh()
    github_fake.secondary_rate_limit(status=403, retry_after=120)
    with pytest.raises(GitHubError) as info:
        source.refresh()
    err = info.value
    assert err.status == 403 and err.rate_limited and err.title == "GitHub rate limit"
    assert err.retry_after == 120
    assert "retry after 120 s" in err.message and "resets at" not in err.message
    assert not err.network
    assert source.list_issues()[0].title == "one"


@pytest.mark.parametrize("message", ["Too Many Requests", ""])
def test_a_429_is_a_rate_limit_whatever_its_words(
    github_fake: FakeGitHub, tmp_path: Path, message: str
) -> None:
    source = _source(github_fake, tmp_path)
    when = datetime.now(UTC) + timedelta(seconds=90)
    github_fake.secondary_rate_limit(
        status=429, message=message or "Slow down", retry_after=format_datetime(when, usegmt=True)
    )
    with pytest.raises(GitHubError) as info:
        source.refresh()
    err = info.value
    assert err.status == 429 and err.rate_limited and err.title == "GitHub rate limit"
    assert err.retry_after is not None and 80 <= err.retry_after <= 91  # an HTTP date


def test_publish_queues_a_secondary_limit_without_the_words_rate_limit(
    project: Project,
) -> None:
    # GitHub's older wording of a secondary limit: a 403 that never says "rate limit"
    project.fake.secondary_rate_limit(
        status=403,
        retry_after=60,
        message="You have triggered an abuse detection mechanism. Please wait a few minutes "
        "before you try again.",
        method="POST",
        path="/pulls$",
    )
    result = execute(project.plan())
    assert result.queued and result.state == "pushed", result.message
    assert "retry after 60 s" in result.message
    # a minute later
    Store.for_repo(project.repo).remember_fact(
        api_host(project.fake.api_url), RETRY_NOT_BEFORE, f"{time.time() - 1:.0f}"
    )
    (done,) = sync(project.repo, project.config())
    assert done.published and len(project.fake.open_pulls()) == 1


# ----------------------------------------------------------------------------------------------
# a 200 that is not GitHub's answer


@pytest.mark.parametrize("full", [True, False])
def test_a_login_page_instead_of_the_issue_list_keeps_the_cache(
    github_fake: FakeGitHub, tmp_path: Path, full: bool
) -> None:
    for n in range(1, 4):
        github_fake.add_issue(f"issue {n}")
    source = _source(github_fake, tmp_path)
    source.refresh()
    github_fake.answer_html(path=r"/issues$")
    with pytest.raises(GitHubError) as info:
        source.refresh(full=full)
    err = info.value
    assert err.title == "Unexpected answer from GitHub" and not err.network
    assert "text/html" in err.message and "Sign in to the network" in err.message
    assert len(source.list_issues()) == 3  # the cache is kept
    assert source.refresh(full=True).total == 3  # and the next good answer works


def test_a_login_page_instead_of_a_pull_request_fails_the_job_not_queues_it(
    project: Project,
) -> None:
    project.fake.answer_html(method="POST", path="/pulls$")
    result = execute(project.plan())
    assert result.status == "failed" and result.state == "pushed"
    assert result.error is not None and result.error.title == "Unexpected answer from GitHub"


# ----------------------------------------------------------------------------------------------
# only network errors are "unreachable"


def test_a_bug_inside_the_client_is_shown_not_served_as_offline(
    github_fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    github_fake.add_issue("one")
    source = _source(github_fake, tmp_path)
    source.refresh()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("link")

    monkeypatch.setattr(_api(github_fake).transport, "request", broken)
    with pytest.raises(GitHubError) as info:
        source.refresh()
    err = info.value
    assert not err.network and err.title == "GitHub client error"
    assert "KeyError" in err.message and "bug" in err.hint
    assert source.list_issues()[0].title == "one"
    monkeypatch.undo()

    github_fake.stop()  # a real network failure is still "unreachable" and serves the cache
    result = source.refresh()
    assert result.offline and "cannot reach GitHub" in result.message


def test_a_bug_inside_the_client_fails_the_publish_instead_of_queueing_it(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = project.plan()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setattr(_api(project.fake).transport, "request", broken)
    result = execute(plan)
    assert result.status == "failed" and result.state == "pushed", result.message
    assert result.error is not None and result.error.title == "GitHub client error"
    assert "unreachable" not in result.message.lower()
    assert [j.status for j in outbox(project.repo)] == ["failed"]


def test_network_errors_are_told_from_others() -> None:
    import httpx2

    request = httpx2.Request("GET", "http://127.0.0.1:1/x")
    assert gh.is_network_error(httpx2.ConnectError("refused", request=request))
    assert gh.is_network_error(httpx2.ReadTimeout("slow", request=request))
    assert gh.is_network_error(ConnectionResetError())
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = httpx2.ConnectError("refused", request=request)
    assert gh.is_network_error(wrapped)
    assert not gh.is_network_error(httpx2.TooManyRedirects("loop", request=request))
    assert not gh.is_network_error(KeyError("x"))
    assert not gh.is_network_error(ValueError("bad JSON"))


# ----------------------------------------------------------------------------------------------
# a fork owned by the same organisation


def test_a_branch_in_a_same_owner_fork_is_named_with_head_repo(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = project.fake
    url = fake.add_fork("widgets-fork")
    git(project.repo, "remote", "add", "fork", url)
    config = fake.write_config(tmp_path / "fork.toml", remote="fork")
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    plan = build_plan(project.repo, project.config(), ChangeProposal.model_validate(PROPOSAL), 1)
    assert plan.head_repo == "acme/widgets-fork" and plan.head == plan.branch
    result = execute(plan)
    assert result.published, result.message
    (post,) = fake.api_requests("POST", r"/pulls$")
    assert post.body["head"] == plan.branch and post.body["head_repo"] == "acme/widgets-fork"
    (pull,) = fake.open_pulls()
    assert pull["head"]["repo"]["full_name"] == "acme/widgets-fork"
    # the base repository has no such branch: the commit went to the fork only
    assert git(fake.bare_path, "branch", "--list", plan.branch).strip() == ""


def test_a_same_repo_publish_sends_no_head_repo(project: Project) -> None:
    assert execute(project.plan()).published
    (post,) = project.fake.api_requests("POST", r"/pulls$")
    assert "head_repo" not in post.body


def test_a_store_from_before_head_repo_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "store.sqlite"
    Store(path)
    with sqlite3.connect(path) as db:  # the jobs table as the first release wrote it
        db.execute("ALTER TABLE jobs DROP COLUMN head_repo")
    store = Store(path)
    job = store.add_job(
        PublishJob(1, "b", "main", "origin", {}, "m", "t", "body", head_repo="o/fork")
    )
    assert store.job(job.id or 0).head_repo == "o/fork"  # type: ignore[union-attr]


def test_retry_after_is_honoured_by_the_next_publish_and_sync(project: Project) -> None:
    fake = project.fake
    fake.secondary_rate_limit(status=429, retry_after=600, method="POST", path="/pulls$")
    first = execute(project.plan())
    assert first.queued and "retry after 600 s" in first.message
    calls = len(fake.api_requests(path=r"/pulls$"))

    # the next publish (a batch's next item) and an impatient sync wait: nothing is sent
    other = execute(project.plan(proposal={**PROPOSAL, "branch_suffix": "next-one"}))
    assert other.queued and other.state == "pushed"
    assert "the pull request was not sent" in other.message
    assert all(r.queued for r in sync(project.repo, project.config()))
    assert len(fake.api_requests(path=r"/pulls$")) == calls

    # once the time has passed, sync opens both
    store = Store.for_repo(project.repo)
    host = api_host(fake.api_url)
    store.remember_fact(host, RETRY_NOT_BEFORE, f"{time.time() - 1:.0f}")
    done = sync(project.repo, project.config())
    assert [r.published for r in done] == [True, True]
    assert len(fake.open_pulls()) == 2


def test_cli_publish_says_ready_for_review_when_drafts_are_refused(
    project: Project, tmp_path: Path
) -> None:
    project.fake.drafts_supported = False
    out = test_publish._publish_cli(project, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == project.fake.open_pulls()[0]["html_url"]  # stdout: the URL
    assert "opened ready for review: GitHub does not support draft pull requests" in out.stderr
    # the next plan says so before anything is sent
    second = project.plan(proposal={**PROPOSAL, "branch_suffix": "again"})
    assert "ready for review  (this repository does not support drafts)" in second.describe()
    result = execute(second)
    assert result.to_json()["draft"] is False


def test_issues_refresh_behind_a_login_page_says_so_and_lists_the_cache(
    git_repo: Path,
    github_fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _connected(git_repo, github_fake, tmp_path, monkeypatch)
    github_fake.add_issue("one")
    github_fake.add_issue("two")
    assert cli_main(["issues", "--repo", str(git_repo), "--json"]) == 0
    capsys.readouterr()
    github_fake.answer_html(path=r"/issues$")
    assert cli_main(["issues", "--repo", str(git_repo), "--refresh", "--json"]) == 7
    captured = capsys.readouterr()
    assert "Unexpected answer from GitHub" in captured.err and "text/html" in captured.err
    out = json.loads(captured.out)
    assert out["stale"] is True and out["error"]["title"] == "Unexpected answer from GitHub"
    assert sorted(i["title"] for i in out["issues"]) == ["one", "two"]  # the cache is kept


@pytest.mark.model
def test_a_draft_batch_on_a_repository_refusing_drafts_publishes_every_item_ready(
    git_repo: Path,
    github_fake: FakeGitHub,
    fake_model_server: Callable[..., Any],
    embedded_model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prepare_repo(git_repo)
    github_fake.connect_repo(git_repo)
    github_fake.drafts_supported = False
    for n in (1, 2):
        github_fake.add_issue(f"Add file {n}", issue_body(n), labels=["easy"])
    server = fake_model_server()
    config = tmp_path / "config.toml"
    config.write_text(
        llama_profile(embedded_model_path)
        + server_profile(server.v1)
        + "\n"
        + github_fake.config_toml()
    )
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)  # the fake is not github.com
    argv = ["batch", "--issues", "1,2", "--publish", "draft", "--yes", "--profile", "srv"]
    code = cli_main([*argv, "--concurrency", "1", "--repo", str(git_repo), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data
    assert [i["state"] for i in data["items"]] == ["published"] * 2
    assert [p["draft"] for p in github_fake.open_pulls()] == [False, False]
    # the first item learnt it; the second was sent ready at once
    assert [r.body["draft"] for r in github_fake.api_requests("POST", r"/pulls$")] == [
        True,
        False,
        False,
    ]
    store = Store.for_repo(git_repo)
    assert all("opened ready for review" in g.detail for g in store.generations())


def test_a_queued_publish_on_a_repository_refusing_drafts_says_it_will_open_ready(
    project: Project,
) -> None:
    Store.for_repo(project.repo).remember_fact(
        GitHubRepo("acme", "widgets", project.fake.api_url).key, "drafts_unsupported", "1"
    )
    project.fake.fail(503, method="GET", path="/pulls$")
    result = execute(project.plan())
    assert result.queued and result.to_json()["draft"] is False
