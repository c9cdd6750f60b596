"""The exit statuses of ``publish``, ``sync`` and ``batch`` that the README's table promises.

Everything runs in process (``engine.cli.main``) on the demo repository: a bare ``origin`` and
no GitHub, so a publish pushes and queues its pull request in the outbox. An unreachable
remote is the bare ``origin`` moved away (git's "Could not read from remote repository"), an
unreachable GitHub a loopback port nothing listens on, a refusal a ``pre-receive`` hook.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.cli.exitcodes import CANCELLED, ERROR, INTERRUPTED, OK, QUEUED
from engine.core.events import Cancelled
from engine.flow.demo import create_demo
from engine.flow.issue_run import IssueRun
from engine.flow.session import ModelHost
from engine.publish.records import PublishJob
from engine.publish.store import Store
from tests.conftest import git

PROPOSAL = {
    "branch_suffix": "add-notes",
    "commit_message": "docs: add notes",
    "pr_title": "docs: add notes",
    "pr_body": "Adds notes.\n\nCloses #1\n",
    "files": [{"path": "docs/notes.md", "content": "# Notes\n"}],
}
BRANCH = "agent/1-add-notes"


class Demo:
    """The demo repository, its bare origin and a clean proposal file for issue 1."""

    def __init__(self, tmp_path: Path) -> None:
        demo = create_demo(tmp_path / "demo")
        self.repo = demo.repo
        self.origin = demo.remote
        self.proposal = tmp_path / "proposal.json"
        self.proposal.write_text(json.dumps(PROPOSAL))

    def publish(self, *extra: str) -> int:
        return main(
            ["publish", str(self.proposal), "--issue", "1", "--repo", str(self.repo), *extra]
        )

    def sync(self, *extra: str) -> int:
        return main(["sync", "--repo", str(self.repo), *extra])

    def jobs(self) -> list[PublishJob]:
        return Store.for_repo(self.repo).jobs()

    def pushed(self) -> bool:
        return bool(git(self.origin, "branch", "--list", BRANCH).strip())

    def origin_unreachable(self) -> Path:
        """Move the bare origin away (restore it by renaming the returned path back)."""
        away = self.origin.with_name("origin-away.git")
        self.origin.rename(away)
        return away


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    return Demo(tmp_path)


class Terminal(io.StringIO):
    """A stdin that says it is a terminal and answers ``text``."""

    def isatty(self) -> bool:
        return True


# -- publish -------------------------------------------------------------------------------


def test_publish_queued_in_the_outbox_is_8(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.publish("--yes") == QUEUED
    assert "outbox" in capsys.readouterr().err
    assert demo.pushed()  # the branch went to the bare origin; the PR waits for a GitHub
    [job] = demo.jobs()
    assert (job.status, job.state, job.branch) == ("pending", "pushed", BRANCH)


def test_publish_without_yes_and_without_a_terminal_refuses_with_7(
    demo: Demo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # README: "Nothing waits for input without a terminal: publish ... need --yes in a script,
    # and refuse (exit 7) without it" (5 is a question asked on a terminal and not answered yes)
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))  # a pipe, even one saying yes
    assert demo.publish() == ERROR
    err = capsys.readouterr().err
    assert "stdin is not a terminal" in err and "--yes" in err
    assert demo.publish("--json") == ERROR
    refused = json.loads(capsys.readouterr().out)
    assert refused["ok"] is False and "not a terminal" in refused["error"]["message"]
    assert demo.jobs() == [] and not demo.pushed()


@pytest.mark.parametrize("answer", ["no\n", "\n", ""], ids=["no", "bare-enter", "eof"])
def test_publish_not_confirmed_on_a_terminal_is_5(
    demo: Demo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answer: str
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    assert demo.publish() == CANCELLED
    captured = capsys.readouterr()
    assert "type 'yes'" in captured.out and "not published" in captured.err
    assert demo.jobs() == [] and not demo.pushed()


def test_publish_confirmed_on_a_terminal_goes_on(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    assert demo.publish() == QUEUED
    assert demo.pushed()


# -- sync ----------------------------------------------------------------------------------


def test_sync_with_nothing_queued_is_0(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.sync() == OK
    assert "the outbox is empty" in capsys.readouterr().out


def test_sync_while_the_remote_is_unreachable_is_8_until_it_is_back(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    away = demo.origin_unreachable()
    assert demo.publish("--yes") == QUEUED  # committed locally, the push queued
    [job] = demo.jobs()
    assert (job.status, job.state) == ("pending", "committed")
    capsys.readouterr()

    assert demo.sync() == QUEUED
    out = capsys.readouterr().out
    assert f"job {job.id} #1 {BRANCH}: pending" in out and "queued in the outbox" in out
    [job] = demo.jobs()
    assert (job.status, job.state, job.attempts) == ("pending", "committed", 1)
    assert job.last_error.startswith("push:")

    away.rename(demo.origin)  # the network is back: the push goes through, the PR still waits
    assert demo.sync() == QUEUED
    [job] = demo.jobs()
    assert (job.status, job.state) == ("pending", "pushed") and demo.pushed()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sync_while_github_is_unreachable_is_8(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.publish("--yes") == QUEUED  # no GitHub known: the PR is queued
    # now a GitHub is configured, but it cannot be reached
    config = tmp_path / "config.toml"
    port = _closed_port()
    config.write_text(
        f'[github]\nrepo = "acme/widgets"\napi_url = "http://127.0.0.1:{port}"\ntimeout = 5\n'
    )
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", "ghp_" + "0" * 36)
    capsys.readouterr()
    assert demo.sync("--json") == QUEUED
    [result] = json.loads(capsys.readouterr().out)
    assert result["status"] == "pending" and "queued in the outbox" in result["message"]
    [job] = demo.jobs()
    assert job.github_repo == "acme/widgets"  # the sync picked up the configuration
    assert (job.status, job.state) == ("pending", "pushed")
    assert job.last_error.startswith("pull_request:")
    assert "no GitHub" not in job.last_error and "token" not in job.last_error


def test_sync_refused_by_the_remote_is_7_and_only_all_retries_it(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    away = demo.origin_unreachable()
    assert demo.publish("--yes") == QUEUED
    away.rename(demo.origin)
    hook = demo.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch protection: pushes are reviewed' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    capsys.readouterr()

    assert demo.sync() == ERROR
    out = capsys.readouterr().out
    assert ": failed" in out and "Push failed" in out
    [job] = demo.jobs()
    assert job.status == "failed" and not demo.pushed()

    assert demo.sync() == OK  # a failed job waits for --all (after fixing the cause)
    assert "the outbox is empty" in capsys.readouterr().out
    assert demo.sync("--all") == ERROR  # not fixed yet: refused again

    hook.unlink()
    assert demo.sync("--all") == QUEUED  # pushed; the PR waits for a GitHub
    assert demo.pushed() and demo.jobs()[0].state == "pushed"


# -- batch ---------------------------------------------------------------------------------


class _Backend:
    """Enough of a backend for the batch to pick its concurrency."""

    CONCURRENT = False
    kind = "fake"
    name = "fake"
    profile = None


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelHost, "load", lambda self, name: _Backend())


def batch(demo: Demo, *extra: str) -> int:
    return main(["batch", "--issues", "1,2", "--repo", str(demo.repo), *extra])


def test_batch_interrupted_by_ctrl_c_is_130_and_resumes(
    demo: Demo,
    no_model: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C during a generation: the generation is cancelled, the batch stops, exit 130."""
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    calls: list[bool] = []

    def generate(
        self: IssueRun, cancel: threading.Event, feedback: str | None = None
    ) -> Iterator[Any]:
        signal.pthread_kill(main_thread, signal.SIGINT)  # what Ctrl-C on the terminal does
        calls.append(cancel.wait(timeout=10))  # cmd_batch sets it when the main thread sees it
        yield Cancelled("cancelled")

    monkeypatch.setattr(IssueRun, "generate", generate)
    assert batch(demo) == INTERRUPTED
    captured = capsys.readouterr()
    assert calls == [True]  # the first issue was cancelled; the second never started
    assert "cancelling (rerun the same command to resume)" in captured.err
    assert "interrupted: rerun the same command to resume" in captured.err
    assert "#1      pending" in captured.out and "#2      pending" in captured.out
    [record] = Store.for_repo(demo.repo).batches()
    assert record["status"] == "interrupted"

    assert batch(demo, "--json") == INTERRUPTED  # the same command resumes the same batch
    data = json.loads(capsys.readouterr().out)
    assert data["resumed"] is True and data["batch"] == record["id"] and data["interrupted"]
    assert calls == [True, True]


def test_batch_publish_draft_without_yes_and_without_a_terminal_refuses_with_7(
    demo: Demo,
    no_model: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert batch(demo, "--publish", "draft") == ERROR
    err = capsys.readouterr().err
    assert "stdin is not a terminal" in err and "--yes" in err
    # --json never asks, even on a terminal
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    assert batch(demo, "--publish", "draft", "--json") == ERROR
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert Store.for_repo(demo.repo).batches() == []  # nothing started


def test_batch_publish_draft_not_confirmed_on_a_terminal_is_5(
    demo: Demo,
    no_model: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    assert batch(demo, "--publish", "draft") == CANCELLED
    captured = capsys.readouterr()
    assert "type 'yes'" in captured.out and "nothing published" in captured.err
    assert Store.for_repo(demo.repo).batches() == []
