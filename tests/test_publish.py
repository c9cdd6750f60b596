"""Publishing against real git and the loopback GitHub: worktree isolation, outbox, crashes.

Every test uses a real repository whose ``origin`` is a bare repository served over git smart
HTTP by the fake GitHub (``git http-backend``), so pushes are real pushes that need the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.core.config import load_config
from engine.core.errors import PublishError, UnsafePathError
from engine.core.models import ChangeProposal
from engine.publish.gitops import write_files
from engine.publish.plan import build_plan
from engine.publish.runner import execute, outbox, sync
from engine.publish.steps import PublishProgress, PublishResult
from engine.publish.store import Store
from tests.conftest import git
from tests.github_fake import FAKE_TOKEN, FakeGitHub

PROPOSAL = {
    "branch_suffix": "health-endpoint",
    "commit_message": "feat: add a health endpoint",
    "pr_title": "Add a health endpoint",
    "pr_body": "Adds `GET /health`.",
    "files": [
        {"path": "app/health.py", "content": 'def health() -> dict:\n    return {"ok": True}\n'},
        {"path": "README.md", "content": "# test repo\n\nNow with /health.\n"},
    ],
}
#: what the checks accept without an error finding (the CLI runs them)
CLEAN = {**PROPOSAL, "pr_title": "feat: add a health endpoint", "pr_body": "Adds it.\n\nCloses #1"}


@dataclass
class Project:
    repo: Path
    fake: FakeGitHub
    config_path: Path

    def config(self):  # type: ignore[no-untyped-def]
        return load_config(self.repo)

    def plan(self, **kwargs):  # type: ignore[no-untyped-def]
        proposal = ChangeProposal.model_validate(kwargs.pop("proposal", PROPOSAL))
        return build_plan(self.repo, self.config(), proposal, 1, **kwargs)

    def remote_sha(self, branch: str) -> str:
        return git(self.fake.bare_path, "rev-parse", f"refs/heads/{branch}").strip()


@pytest.fixture
def project(
    git_repo: Path, github_fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Project:
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)  # the author must come from git config
    git(git_repo, "config", "user.name", "Config Author")
    git(git_repo, "config", "user.email", "config@example.com")
    github_fake.connect_repo(git_repo)
    config = github_fake.write_config(tmp_path / "config.toml", labels=["agent-tui"])
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)
    github_fake.add_issue("Add a health endpoint", labels=["api"])
    return Project(git_repo, github_fake, config)


def snapshot(repo: Path) -> dict[str, str]:
    """What must not change: HEAD, the index, the stash, config and every working file."""
    gitdir = repo / ".git"
    files = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if rel.parts[0] == ".git" or not path.is_file():
            continue
        files[rel.as_posix()] = f"{path.stat().st_mode:o}:" + _sha(path.read_bytes())
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    stash = subprocess.run(
        ["git", "stash", "list", "--format=%H %s"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return {
        "HEAD": (gitdir / "HEAD").read_text(),
        "head_commit": git(repo, "rev-parse", "HEAD"),
        "index": _sha((gitdir / "index").read_bytes()),
        "config": _sha((gitdir / "config").read_bytes()),
        "stash": stash,
        "files": _sha(json.dumps(files).encode()),
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_dirty(repo: Path) -> None:
    (repo / "notes.txt").write_text("to stash\n")
    git(repo, "add", "notes.txt")
    git(repo, "stash", "push", "-q", "-m", "wip")
    (repo / "README.md").write_text("# test repo\n\nstaged change\n")
    git(repo, "add", "README.md")
    (repo / "README.md").write_text("# test repo\n\nstaged, then an unstaged change\n")
    (repo / "untracked.py").write_text("print('not in git')\n")
    (repo / "app").mkdir()
    (repo / "app" / "scratch.txt").write_text("untracked in a directory the proposal uses\n")


def _token_free(root: Path, *texts: str) -> None:
    """The token (raw or Basic-encoded) appears in no file under ``root`` and no text."""
    forms = [FAKE_TOKEN.encode(), base64.b64encode(f"x-access-token:{FAKE_TOKEN}".encode())]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(f in data for f in forms), f"token found in {path}"
    for text in texts:
        assert FAKE_TOKEN not in text and forms[1].decode() not in text


def test_publish_dirty_tree_untouched_pr_opened(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repo, fake = project.repo, project.fake
    _make_dirty(repo)
    before = snapshot(repo)
    steps: list[PublishProgress] = []
    plan = project.plan(draft=True)
    assert plan.ready, plan.errors
    assert (plan.branch, plan.base, plan.remote) == ("agent/1-health-endpoint", "main", "origin")
    assert plan.labels == ["agent-tui"] and plan.token_source == "GH_ENTERPRISE_TOKEN"
    assert "Closes #1" in plan.body and any("Closes #1" in w for w in plan.warnings)

    result = execute(plan, progress=steps.append)

    assert result.published, result.message
    assert snapshot(repo) == before  # tree, index, HEAD, stash, untracked: byte-identical
    assert [s.step for s in steps if s.state == "done"] == [
        "fetch",
        "commit",
        "branch",
        "push",
        "pull_request",
        "labels",
    ]
    (pull,) = fake.open_pulls("agent/1-health-endpoint")
    assert pull["html_url"] == result.pr_url and pull["draft"] is True
    assert pull["base"]["ref"] == "main" and pull["title"] == "Add a health endpoint"
    assert pull["body"].endswith("Closes #1\n")
    assert [lab["name"] for lab in pull["labels"]] == ["agent-tui"]
    assert project.remote_sha(plan.branch) == result.head_sha == pull["head"]["sha"]
    assert git(repo, "rev-parse", plan.branch).strip() == result.head_sha
    # the commit: on the base, the proposal's message, author from git config, trailers
    log = git(repo, "log", "-1", "--format=%an <%ae>%n%P%n%B", plan.branch)
    author, parent, *message = log.splitlines()
    assert author == "Config Author <config@example.com>"
    assert parent == git(repo, "rev-parse", "main").strip()
    assert message[0] == "feat: add a health endpoint"
    assert git(repo, "show", f"{plan.branch}:README.md") == PROPOSAL["files"][1]["content"]
    assert git(repo, "show", f"{plan.branch}:app/health.py") == PROPOSAL["files"][0]["content"]
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    # history: published, linked to its job and PR
    store = Store.for_repo(repo)
    (record,) = store.generations()
    assert (record.outcome, record.pr_url, record.issue_number) == (
        "published",
        pull["html_url"],
        1,
    )
    assert record.proposal == PROPOSAL
    # the push authenticated with the token, which is written nowhere
    pushes = [r for r in fake.requests if r.kind == "git" and "receive-pack" in r.path]
    assert pushes and all(r.authenticated for r in pushes)
    _token_free(repo / ".git", caplog.text, json.dumps(result.to_json()))


def test_trailers_record_provenance(project: Project) -> None:
    from engine.publish.provenance import Provenance

    prov = Provenance("coder-7b", "sha256:abc123", "backend-dev", "sha256:def456", 7)
    result = execute(project.plan(provenance=prov))
    assert result.published
    trailers = git(
        project.repo, "log", "-1", "--format=%(trailers:only,unfold)", result.branch
    ).strip()
    assert trailers.splitlines() == [
        "Agent-Tui-Model-Profile: coder-7b",
        "Agent-Tui-Model: sha256:abc123",
        "Agent-Tui-Prompt-Profile: backend-dev",
        "Agent-Tui-Prompt-Hash: sha256:def456",
        "Agent-Tui-Seed: 7",
    ]


@dataclass
class _Finding:
    severity: str
    message: str


def test_error_findings_refuse_and_nothing_is_created(project: Project) -> None:
    findings = [_Finding("warning", "style"), _Finding("error", "writes outside the repo")]
    plan = project.plan(findings=findings)
    assert not plan.ready
    assert any("1 error finding(s) remain" in e for e in plan.errors)
    with pytest.raises(PublishError, match="error finding"):
        execute(plan)
    assert Store.for_repo(project.repo).jobs() == []
    assert git(project.repo, "branch", "--list", "agent/*") == ""
    assert project.fake.api_requests("POST") == []
    # warnings alone do not block
    assert project.plan(findings=findings[:1]).ready


def test_existing_branch_choice_new_suffix_or_update_reuses_pr(project: Project) -> None:
    first = execute(project.plan())
    assert first.published
    conflict = project.plan()
    assert conflict.branch_conflict and not conflict.ready
    assert conflict.suggested_branch == "agent/1-health-endpoint-2"

    second = execute(project.plan(on_existing="new"))
    assert second.published and second.branch == "agent/1-health-endpoint-2"
    assert second.pr_url != first.pr_url

    changed = {**PROPOSAL, "files": [{"path": "app/health.py", "content": "def health():\n"}]}
    update = project.plan(proposal=changed, on_existing="update")
    assert update.update_existing and update.existing_pr == first.pr_url
    third = execute(update)
    assert third.published and third.pr_reused and third.pr_url == first.pr_url
    assert len(project.fake.open_pulls("agent/1-health-endpoint")) == 1  # never duplicated
    parent = git(project.repo, "rev-parse", f"{third.head_sha}^").strip()
    assert parent == first.head_sha  # committed on top: a fast-forward push
    assert project.remote_sha(first.branch) == third.head_sha


def test_github_422_shown_in_its_words_branch_kept(project: Project) -> None:
    message = "No commits between main and agent/1-health-endpoint"
    project.fake.fail(
        422,
        method="POST",
        path="/pulls$",
        errors=[{"resource": "PullRequest", "code": "custom", "message": message}],
    )
    result = execute(project.plan())
    assert result.status == "failed" and result.state == "pushed"
    assert "GitHub answered 422" in result.message and message in result.message
    assert "branch agent/1-health-endpoint is kept" in result.message
    assert result.error is not None and result.error.title == "GitHub rejected the request"
    store = Store.for_repo(project.repo)
    (record,) = store.generations()
    assert record.outcome == "failed" and message in record.detail
    assert sync(project.repo, project.config()) == []  # failed jobs wait for the user
    (retried,) = sync(project.repo, project.config(), include_failed=True)
    assert retried.published and len(project.fake.open_pulls()) == 1


def test_rate_limited_pr_is_queued_then_synced(project: Project) -> None:
    project.fake.rate_limit(method="GET")  # the lookup for an existing PR
    result = execute(project.plan(ask_github=False))
    assert result.queued and result.state == "pushed"
    assert "rate limit" in result.message
    (done,) = sync(project.repo, project.config())
    assert done.published and len(project.fake.open_pulls()) == 1


def test_network_cut_between_push_and_pr_queues_then_sync_completes(project: Project) -> None:
    fake = project.fake

    def cut_after_push(step: PublishProgress) -> None:
        if step.step == "push" and step.state == "done":
            fake.stop()

    result = execute(project.plan(), progress=cut_after_push)
    assert result.queued and result.state == "pushed", result.message
    assert "GitHub unreachable" in result.message or "cannot reach GitHub" in result.message
    (job,) = outbox(project.repo)
    assert job.status == "pending" and job.head_sha == result.head_sha
    assert git(project.repo, "rev-parse", job.branch).strip() == job.head_sha  # branch intact
    assert Store.for_repo(project.repo).generations()[0].outcome == "queued"

    (still,) = sync(project.repo, project.config())  # still offline: stays pending
    assert still.queued
    fake.start()
    (done,) = sync(project.repo, project.config())
    assert done.published and done.pr_url
    assert len(fake.open_pulls(job.branch)) == 1
    assert outbox(project.repo) == []
    assert Store.for_repo(project.repo).generations()[0].outcome == "published"
    assert sync(project.repo, project.config()) == []


def _publish_cli(project: Project, tmp_path: Path, kill_at: str | None = None):  # type: ignore[no-untyped-def]
    proposal = tmp_path / "proposal.json"
    proposal.write_text(json.dumps(CLEAN))
    env = {k: v for k, v in os.environ.items() if k != "AGENT_TUI_KILL_AT"}
    if kill_at:
        env["AGENT_TUI_KILL_AT"] = kill_at
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "publish",
            str(proposal),
            "--issue",
            "1",
            "--yes",
            "--base",
            "main",
            "--repo",
            str(project.repo),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("kill_at", "state"),
    [
        ("planned", "planned"),
        ("commit_created", "planned"),
        ("committed", "committed"),
        ("push_done", "committed"),
        ("pushed", "pushed"),
        ("pr_created", "pushed"),
        ("pr_opened", "pr_opened"),
    ],
)
def test_killed_at_any_step_sync_finishes_exactly_one_pr(
    project: Project, tmp_path: Path, kill_at: str, state: str
) -> None:
    from engine.publish.steps import CHECKPOINTS

    assert kill_at in CHECKPOINTS  # a renamed checkpoint would never kill: the test would lie
    fake = project.fake
    proc = _publish_cli(project, tmp_path, kill_at)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (job,) = outbox(project.repo)
    assert (job.status, job.state) == ("pending", state)
    if job.head_sha:  # once committed, the commit is safe (the branch may be created by sync)
        assert git(project.repo, "cat-file", "-t", job.head_sha).strip() == "commit"
    if kill_at in ("push_done", "pushed", "pr_created", "pr_opened"):  # pushed before the kill
        assert project.remote_sha(job.branch) == job.head_sha
    if kill_at == "pr_opened":  # the PR is recorded, its labels are not added yet
        (opened,) = fake.open_pulls(job.branch)
        assert job.pr_number == opened["number"] and opened["labels"] == []

    (done,) = sync(project.repo, project.config())
    assert done.published, done.message
    pulls = fake.open_pulls("agent/1-health-endpoint")
    assert len(pulls) == 1 and pulls[0]["html_url"] == done.pr_url
    assert len(fake.api_requests("POST", "/pulls$")) == len(fake.pulls) == 1  # never twice
    assert [lab["name"] for lab in pulls[0]["labels"]] == ["agent-tui"]
    assert len(fake.api_requests("POST", "/labels$")) == 1
    assert project.remote_sha(done.branch) == done.head_sha == pulls[0]["head"]["sha"]
    assert git(project.repo, "rev-parse", done.branch).strip() == done.head_sha
    assert git(project.repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    (record,) = Store.for_repo(project.repo).generations()
    assert (record.outcome, record.pr_url) == ("published", done.pr_url)
    assert outbox(project.repo) == []
    _token_free(project.repo / ".git", proc.stdout, proc.stderr)


def test_cli_publish_refuses_without_terminal_and_on_error_findings(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(CLEAN))
    args = ["publish", str(good), "--issue", "1", "--repo", str(project.repo)]
    assert cli_main(args) == 7  # stdin is not a terminal and no --yes
    assert "pass --yes" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**CLEAN, "files": [{"path": ".git/config", "content": "x"}]}))
    assert (
        cli_main(["publish", str(bad), "--issue", "1", "--yes", "--repo", str(project.repo)]) == 1
    )
    assert "refusing to publish" in capsys.readouterr().err
    assert Store.for_repo(project.repo).jobs() == [] and project.fake.pulls == {}


def test_cli_publish_then_history_and_sync_commands(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proposal = tmp_path / "p.json"
    proposal.write_text(json.dumps(CLEAN))
    base = ["--repo", str(project.repo)]
    code = cli_main(
        [
            "publish",
            str(proposal),
            "--issue",
            "1",
            "--yes",
            "--ready",
            "--json",
            "--label",
            "bot",
            *base,
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "done"
    (pull,) = project.fake.open_pulls()
    assert pull["draft"] is False
    assert [lab["name"] for lab in pull["labels"]] == ["agent-tui", "bot"]
    assert cli_main(["history", "--json", *base]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["outcome"] == "published" and entry["pr_url"] == out["pr_url"]
    assert cli_main(["history", "--jobs", *base]) == 0
    assert "done" in capsys.readouterr().out
    assert cli_main(["sync", *base]) == 0
    assert "outbox is empty" in capsys.readouterr().out


def test_test_command_gates_the_commit(project: Project, tmp_path: Path) -> None:
    cfg = project.fake.write_config(
        project.config_path,
        test_command="test -f app/health.py && echo 3 passed",
        tests_in_body=True,
    )
    assert cfg.exists()
    result = execute(project.plan())
    assert result.published and "passed" in result.test_summary
    (pull,) = project.fake.open_pulls()
    assert "3 passed" in pull["body"] and "**Tests:**" in pull["body"]

    project.fake.write_config(project.config_path, test_command="echo boom; exit 3")
    failed = execute(project.plan(on_existing="new"))
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.title == "Tests failed" and "exit 3" in failed.message
    assert failed.head_sha is None  # nothing committed, no branch
    assert git(project.repo, "branch", "--list", failed.branch) == ""
    assert len(project.fake.open_pulls()) == 1


def test_test_command_timeout_kills_the_process_group_and_commits_nothing(
    project: Project, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    # the shell (the group's leader) and a background grandchild that would outlive a plain
    # kill (its output does not hold the pipe: only the group kill ends it)
    command = f"sleep 60 >/dev/null 2>&1 & echo $! > {pids}; echo $$ >> {pids}; wait"
    project.fake.write_config(project.config_path, test_command=command, test_timeout=0.5)
    plan = project.plan()
    assert plan.test_timeout == 0.5
    started = time.monotonic()
    result = execute(plan)
    assert time.monotonic() - started < 30  # not waiting for the grandchild's 60 s
    assert result.status == "failed" and result.error is not None
    assert result.error.title == "Tests failed"
    waited = re.search(r"timed out after ([\d.]+) s; nothing was committed", result.message)
    assert waited and 0.5 <= float(waited[1]) < 30, result.message
    assert "timed out" in result.test_summary
    assert result.head_sha is None and git(project.repo, "branch", "--list", "agent/*") == ""
    assert project.fake.api_requests("POST") == []
    assert git(project.repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    grandchild, leader = (int(line) for line in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (alive := [p for p in (grandchild, leader) if _running(p)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert alive == [], f"processes of the test command survived: {alive}"
    with pytest.raises(ProcessLookupError):  # the group is gone (zombies aside)
        _signal_live_group(leader)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _signal_live_group(pgid: int) -> None:
    """``killpg(pgid, 0)``, raising ProcessLookupError when only zombies (or nothing) remain."""
    members = []
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
        if not members:
            raise ProcessLookupError(pgid)
    os.killpg(pgid, 0)


def test_base_is_githubs_default_branch_not_the_local_one(project: Project) -> None:
    repo, fake = project.repo, project.fake
    # develop: one commit ahead of main, only on the remote (the local checkout is on main)
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    develop = git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "develop work").strip()
    git(repo, "push", "-q", str(fake.bare_path), f"{develop}:refs/heads/develop")
    fake.default_branch = "develop"
    assert git(repo, "branch", "--show-current").strip() == "main"
    assert git(repo, "symbolic-ref", "refs/remotes/origin/HEAD").strip().endswith("/main")

    plan = project.plan()
    assert plan.base == "develop" and "base       develop" in plan.describe()
    assert fake.api_requests("GET", "^/repos/acme/widgets$")  # asked GitHub
    result = execute(plan)
    assert result.published, result.message
    (pull,) = fake.open_pulls(plan.branch)
    assert pull["base"]["ref"] == "develop" and pull["base"]["sha"] == develop
    assert git(repo, "rev-parse", f"{result.head_sha}^").strip() == develop  # built on it
    assert git(repo, "branch", "--show-current").strip() == "main"
    # [publish] base wins over GitHub's answer
    project.fake.write_config(project.config_path, base="main")
    assert project.plan(on_existing="new").base == "main"


def test_custom_branch_prefix_names_the_pushed_branch(project: Project) -> None:
    project.fake.write_config(project.config_path, branch_prefix="bots/tui-")
    plan = project.plan()
    assert plan.branch == "bots/tui-1-health-endpoint"
    result = execute(plan)
    assert result.published and result.branch == plan.branch
    assert project.remote_sha(plan.branch) == result.head_sha
    assert git(project.repo, "rev-parse", plan.branch).strip() == result.head_sha
    (pull,) = project.fake.open_pulls()
    assert pull["head"]["ref"] == plan.branch
    refs = git(project.fake.bare_path, "for-each-ref", "--format=%(refname)", "refs/heads")
    assert sorted(refs.split()) == ["refs/heads/bots/tui-1-health-endpoint", "refs/heads/main"]
    # an invalid prefix is refused at the plan, before anything is created
    project.fake.write_config(project.config_path, branch_prefix="bad..prefix/")
    bad = project.plan()
    assert not bad.ready and any("branch_prefix" in e for e in bad.errors)


@pytest.mark.parametrize(
    ("status", "message", "title"),
    [
        (401, "Bad credentials", "GitHub authentication failed"),
        (404, "Not Found", "Not found on GitHub"),
    ],
)
def test_github_401_404_at_pr_time_shown_in_its_words_branch_kept(
    project: Project, status: int, message: str, title: str
) -> None:
    project.fake.fail(status, method="POST", path="/pulls$", message=message)
    result = execute(project.plan())
    assert result.status == "failed" and result.state == "pushed"
    assert f"GitHub answered {status}" in result.message and message in result.message
    assert "branch agent/1-health-endpoint is kept" in result.message
    assert result.error is not None and result.error.title == title
    assert project.fake.pulls == {}
    assert project.remote_sha(result.branch) == result.head_sha
    assert git(project.repo, "rev-parse", result.branch).strip() == result.head_sha
    (record,) = Store.for_repo(project.repo).generations()
    assert record.outcome == "failed" and message in record.detail
    assert sync(project.repo, project.config()) == []  # failed jobs wait for the user
    (retried,) = sync(project.repo, project.config(), include_failed=True)
    assert retried.published and retried.head_sha == result.head_sha
    assert len(project.fake.open_pulls()) == 1


def test_no_github_remote_pushes_and_queues_pr_until_configured(
    git_repo: Path, github_fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    github_fake.connect_repo(git_repo)
    git(git_repo, "remote", "set-url", "origin", str(github_fake.bare_path))  # a plain path
    config_path = tmp_path / "config.toml"
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config_path))
    config_path.write_text("[publish]\nbase = 'main'\n")
    plan = build_plan(git_repo, load_config(git_repo), ChangeProposal.model_validate(PROPOSAL), 1)
    assert plan.ready and plan.github is None and plan.token_source is None
    result = execute(plan)
    assert result.queued and result.state == "pushed"
    assert "no GitHub repository" in result.message
    assert git(github_fake.bare_path, "rev-parse", plan.branch).strip() == result.head_sha

    config_path.write_text(f"[github]\napi_url = '{github_fake.api_url}'\nrepo = 'acme/widgets'\n")
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)
    (done,) = sync(git_repo, load_config(git_repo))
    assert done.published and len(github_fake.open_pulls(plan.branch)) == 1


def test_cancel_before_push_keeps_branch_and_pushes_nothing(project: Project) -> None:
    cancel = threading.Event()
    plan = project.plan()
    seen = len(project.fake.requests)

    def cancel_after_commit(step: PublishProgress) -> None:
        if step.step == "commit" and step.state == "done":
            cancel.set()

    result: PublishResult = execute(plan, progress=cancel_after_commit, cancel=cancel)
    assert result.status == "cancelled" and result.head_sha
    assert git(project.repo, "rev-parse", result.branch).strip() == result.head_sha
    assert "receive-pack" not in " ".join(r.path for r in project.fake.requests[seen:])
    assert outbox(project.repo) == []  # not retried by sync


def test_unsafe_paths_are_never_written(tmp_path: Path) -> None:
    root = tmp_path / "wt"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    for path in ("../escape.py", "link/escape.py", ".git/hooks/post-commit", "/etc/passwd"):
        with pytest.raises(UnsafePathError):
            write_files(root, [(path, "x")])
    assert list((tmp_path / "outside").iterdir()) == []
    assert write_files(root, [("ok/file.txt", "a\r\nb")]) == ["ok/file.txt"]
    assert (root / "ok" / "file.txt").read_bytes() == b"a\r\nb"  # no newline translation


def test_model_ref_hashes_the_gguf_once_and_tags_served_models(tmp_path: Path) -> None:
    from engine.core.config import parse_profile
    from engine.publish.provenance import model_ref_for

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(4096))
    store = Store(tmp_path / "store.sqlite")
    ref = model_ref_for(parse_profile({"backend": "llama_cpp", "model_path": str(gguf)}), store)
    assert ref == "sha256:" + _sha(gguf.read_bytes())
    assert store.cached_hash(gguf) == ref  # the next publish does not read 4 GB again
    ollama = parse_profile({"backend": "ollama", "model": "qwen2.5-coder:7b"})
    assert model_ref_for(ollama) == "ollama:qwen2.5-coder:7b"
    missing = parse_profile({"backend": "llama_cpp", "model_path": str(tmp_path / "no.gguf")})
    assert model_ref_for(missing) == ""
