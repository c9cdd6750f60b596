"""``agent-tui batch`` end to end: real repositories, the embedded model in-process and behind
the loopback OpenAI-compatible server, the loopback GitHub, and a real SIGKILL.

What must hold: K generations really run at once on a server backend (the server sees them in
flight together) and one at a time in-process; a rerun of the same batch redoes nothing
finished; a batch killed mid-publish and mid-generation resumes without generating a finished
issue again and without a second pull request; Ctrl-C (the cancel event) leaves the running
issue to redo; bad input is a clear error with the documented exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.cli.exitcodes import ERROR, FAILED_CHECK, OK, USAGE
from engine.core.config import load_config
from engine.flow.batch import run_batch
from engine.flow.batch_items import BatchOptions, BatchProgress
from engine.flow.session import Workspace
from engine.publish.store import Store
from tests.cli_repo import (
    BROKEN,
    issue_body,
    issue_of,
    llama_profile,
    prepare_repo,
    server_profile,
    simple_issues,
)
from tests.github_fake import FAKE_TOKEN, FakeGitHub

pytestmark = pytest.mark.model

CHAT = "/v1/chat/completions"


def _issues_with_broken_3() -> dict[int, Any]:
    issues = simple_issues(1, 2)
    issues[2]["labels"] = ["hard"]
    issues[3] = {
        "title": "Add a broken module",
        "labels": ["easy"],
        "body": issue_body(3, **BROKEN),
    }
    return issues


@pytest.fixture
def local_repo(
    git_repo: Path,
    embedded_model_path: Path,
    fake_model_server: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> tuple[Path, Any]:
    """Local issues 1, 2 (clean) and 3 (its answer does not parse); both model profiles."""
    prepare_repo(git_repo, _issues_with_broken_3())
    server = fake_model_server()
    request.addfinalizer(lambda: server.wait_idle(120))  # a cancelled stream ends server-side
    config = git_repo.parent / "config.toml"
    config.write_text(llama_profile(embedded_model_path) + server_profile(server.v1))
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    return git_repo, server


def test_server_batch_runs_k_at_once_and_a_rerun_redoes_nothing(
    local_repo: tuple[Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, server = local_repo
    argv = ["batch", "--issues", "1,3", "--profile", "srv", "--repo", str(repo), "--json"]
    code = main([*argv, "--concurrency", "2"])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert code == FAILED_CHECK  # issue 3's proposal has an error finding
    assert [i["issue_number"] for i in data["items"]] == [1, 3]
    assert [i["state"] for i in data["items"]] == ["generated"] * 2
    by_issue = {i["issue_number"]: i for i in data["items"]}
    assert by_issue[1]["errors"] == 0 and by_issue[3]["errors"] >= 1
    assert all(i["tokens_per_s"] > 0 and i["seconds"] > 0 for i in data["items"])
    assert data["concurrency"] == 2 and data["complete"] and not data["ok"]
    assert server.log.max_in_flight == 2  # both requests were on the wire together
    assert Counter(issue_of(b) for b in server.bodies(CHAT)) == {1: 1, 3: 1}
    store = Store.for_repo(repo)
    for item in data["items"]:
        record = store.generation(item["generation_id"])
        assert record is not None and record.model_profile == "srv"
        assert record.issue_number == item["issue_number"] and record.proposal
    assert "batch #1 started: 2 issue(s), 2 to do" in captured.err

    # the same command again: the batch is complete, nothing is generated again
    code = main([*argv, "--concurrency", "9"])
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert code == FAILED_CHECK and again["batch"] == data["batch"] and again["resumed"]
    assert all(i["done_before"] for i in again["items"])
    assert len(server.bodies(CHAT)) == 2
    assert "allows 4 concurrent generations" in captured.err  # --concurrency 9 > the bound
    assert "already complete" in captured.err

    # the table for people
    assert main(argv[:-1]) == FAILED_CHECK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["issue", "outcome", "findings", "tok/s", "time", "detail"]
    assert table[2].startswith("#1") and "generated (earlier)" in table[2] and "0E 0W" in table[2]
    assert table[3].startswith("#3") and "error finding(s)" in table[3]
    assert table[-1].startswith("batch #1 finished") and "2 generated" in table[-1]
    assert len(server.bodies(CHAT)) == 2


def test_in_process_batch_one_at_a_time_blocks_what_cannot_be_published(
    local_repo: tuple[Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, server = local_repo
    argv = ["batch", "--label", "easy", "--publish", "draft", "--yes", "--repo", str(repo)]
    code = main([*argv, "--concurrency", "3", "--json"])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert code == FAILED_CHECK
    assert data["concurrency"] == 1 and "one generation at a time" in captured.err
    items = {i["issue_number"]: i for i in data["items"]}
    assert sorted(items) == [1, 3]  # issue 2 is labelled "hard"
    assert items[3]["state"] == "blocked" and "error finding" in items[3]["detail"]
    assert items[1]["state"] == "blocked" and "no remote named 'origin'" in items[1]["detail"]
    assert server.bodies(CHAT) == []  # the in-process model did the work
    second = Store.for_repo(repo).generation(items[3]["generation_id"])
    assert second is not None and second.stats["cached_prompt_tokens"] > 0  # prefix reused
    assert Store.for_repo(repo).jobs() == []  # nothing was pushed or queued


def test_cancel_leaves_the_running_issue_to_redo(local_repo: tuple[Path, Any]) -> None:
    repo, server = local_repo
    config = load_config(repo)
    cancel = threading.Event()

    def progress(p: BatchProgress) -> None:
        if p.kind == "tokens":
            cancel.set()  # what Ctrl-C does

    options = BatchOptions(issues=[1, 2], model="srv", concurrency=1)
    summary = run_batch(Workspace(repo, config), options, progress=progress, cancel=cancel)
    assert summary.interrupted and not summary.complete
    assert [i.state for i in summary.items] == ["pending", "pending"]  # 2 was never started
    assert summary.items[0].attempts == 1 and summary.items[1].attempts == 0
    store = Store.for_repo(repo)
    assert store.generations() == []  # a cancelled run records nothing
    assert store.batches()[0]["status"] == "interrupted"  # a rerun resumes it
    assert len(server.bodies(CHAT)) == 1


def test_a_failed_issue_is_final_unless_retried(local_repo: tuple[Path, Any]) -> None:
    repo, server = local_repo
    config_file = Path(os.environ["AGENT_TUI_CONFIG"])
    text = config_file.read_text()
    server_budget = "max_tokens = 160\ntemperature = 0.0\nconcurrency"
    config_file.write_text(text.replace(server_budget, server_budget.replace("160", "16")))
    options = BatchOptions(issues=[1], model="srv")
    first = run_batch(Workspace(repo, load_config(repo)), options)
    [item] = first.items
    assert item.state == "failed" and item.detail.startswith("truncated") and not first.ok
    config_file.write_text(text)  # the budget fixed; the batch is the same (same profile name)
    again = run_batch(Workspace(repo, load_config(repo)), options)
    assert again.batch_id == first.batch_id and again.items[0].state == "failed"
    assert len(server.bodies(CHAT)) == 1  # a failure is final unless asked
    options.retry_failed = True
    retried = run_batch(Workspace(repo, load_config(repo)), options)
    assert retried.batch_id == first.batch_id and retried.ok
    assert retried.items[0].state == "generated" and retried.items[0].attempts == 2


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        ([], ERROR, "choose the issues"),
        (["--issues", "1", "--label", "easy"], USAGE, "not allowed with"),
        (["--issues", "1,x"], USAGE, "not an issue number"),
        (["--issues", "1", "--concurrency", "0"], USAGE, "must be 1 or more"),
        (["--label", "nothing"], ERROR, "no open issue has the label(s) nothing"),
        (["--issues", "99"], ERROR, "no local issue #99"),
        (["--issues", "1", "--profile", "nope"], ERROR, "no model profile named 'nope'"),
        (["--issues", "1", "--publish", "draft"], ERROR, "pass --yes"),
    ],
)
def test_batch_bad_input_is_a_clear_error(
    local_repo: tuple[Path, Any],
    args: list[str],
    code: int,
    said: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo, server = local_repo
    argv = ["batch", *args, "--repo", str(repo), "--json"]
    if code == USAGE:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == USAGE
    else:
        assert main(argv) == code
        error = json.loads(capsys.readouterr().out)["error"]
        assert said in error["message"] + " " + error["hint"]
        assert server.bodies(CHAT) == []
        return
    assert said in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# killed for real, resumed


@pytest.fixture
def spawn(fake_model_server: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Start ``agent-tui batch`` subprocesses; any still running at the end is killed (its
    output then goes to stderr, for the failure report)."""
    procs: list[subprocess.Popen[str]] = []

    def start(repo: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "engine.cli", "batch", "--issues", "1,2"]
        cmd += ["--publish", "draft", "--yes", "--profile", "srv", "--repo", str(repo), *extra]
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            out, err = proc.communicate()
            print(f"killed at teardown: {proc.args}\n{out}\n{err}", file=sys.stderr)


def _items(repo: Path) -> dict[int, dict[str, Any]]:
    store = Store.for_repo(repo)
    batches = store.batches(limit=1)
    if not batches:
        return {}
    return {i["issue_number"]: i for i in store.batch_items(batches[0]["id"])}


def test_a_killed_batch_resumes_without_redoing_or_duplicating(
    git_repo: Path,
    github_fake: FakeGitHub,
    fake_model_server: Callable[..., Any],
    spawn: Callable[..., subprocess.Popen[str]],
    embedded_model_path: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    prepare_repo(git_repo)
    github_fake.connect_repo(git_repo)
    for n in (1, 2):
        github_fake.add_issue(f"Add file {n}", issue_body(n), labels=["easy"])
    server = fake_model_server()
    request.addfinalizer(lambda: server.wait_idle(120))  # never free the model mid-decode
    config = tmp_path / "config.toml"
    config.write_text(
        llama_profile(embedded_model_path)
        + server_profile(server.v1)
        + "\n"
        + github_fake.config_toml()
    )
    env = {
        **os.environ,
        "AGENT_TUI_CONFIG": str(config),
        "GH_ENTERPRISE_TOKEN": FAKE_TOKEN,
        "PYTHONUNBUFFERED": "1",
    }

    # 1. SIGKILLed right after GitHub opened the first pull request, before it was recorded
    first = spawn(git_repo, {**env, "AGENT_TUI_KILL_AT": "pr_created"}, "--concurrency", "1")
    _out, err = first.communicate(timeout=120)
    assert first.returncode == -signal.SIGKILL, err
    assert _items(git_repo)[1]["state"] == "publishing"
    assert len(github_fake.open_pulls()) == 1

    # 2. resumed (issue 1's publish finished through its job), SIGKILLed while issue 2 generates
    second = spawn(git_repo, env, "--concurrency", "1")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and second.poll() is None:
        items = _items(git_repo)
        if items[1]["state"] == "published" and items[2]["state"] == "generating":
            second.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    _out, err = second.communicate(timeout=60)
    assert second.returncode == -signal.SIGKILL, err
    assert server.wait_idle(60)  # the killed client's generation has stopped on the server
    items = _items(git_repo)
    assert [items[n]["state"] for n in (1, 2)] == ["published", "generating"]
    assert len(github_fake.open_pulls()) == 1  # the PR opened before the first kill, reused

    # 3. resumed to the end
    third = spawn(git_repo, env, "--json", "--concurrency", "2")
    out, err = third.communicate(timeout=120)
    assert third.returncode == OK, err
    data = json.loads(out)
    assert data["resumed"] and data["complete"] and data["ok"]
    assert [i["state"] for i in data["items"]] == ["published"] * 2
    assert [i["done_before"] for i in data["items"]] == [True, False]

    # issue 1 was generated once (never again after its kill); issue 2 was started twice
    asked = Counter(issue_of(b) for b in server.bodies(CHAT))
    assert asked[1] == 1 and 1 <= asked[2] <= 2 and set(asked) == {1, 2}
    # exactly one draft pull request per issue, each closing its issue
    pulls = sorted(github_fake.pulls.values(), key=lambda p: p["head"]["ref"])
    assert [p["head"]["ref"] for p in pulls] == [f"agent/{n}-file-{n}" for n in (1, 2)]
    assert all(p["draft"] and p["state"] == "open" for p in pulls)
    assert all(f"Closes #{n}" in p["body"] for n, p in zip((1, 2), pulls, strict=True))
    store = Store.for_repo(git_repo)
    for n in (1, 2):
        [record] = store.generations(issue=n)
        assert record.outcome == "published" and record.pr_url
    assert [j.status for j in store.jobs()] == ["done"] * 2


def test_batch_on_an_ollama_server_runs_k_generations_at_once(
    git_repo: Path,
    fake_model_server: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ollama is a CONCURRENT backend too: K requests on the wire together, real answers."""
    prepare_repo(git_repo, simple_issues(1, 2))
    server = fake_model_server()
    config = git_repo.parent / "config.toml"
    config.write_text(
        'default_model = "oll"\ndefault_prompt = "tiny"\n\n[models.oll]\nbackend = "ollama"\n'
        f'host = "{server.url}"\nmodel = "gemma-3-270m"\nn_ctx = 1024\nmax_tokens = 160\n'
        "temperature = 0.0\n"
    )
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    argv = ["batch", "--issues", "1,2", "--concurrency", "2", "--repo", str(git_repo), "--json"]
    assert main(argv) == OK
    data = json.loads(capsys.readouterr().out)
    assert data["concurrency"] == 2 and data["complete"] and data["ok"]
    assert [i["state"] for i in data["items"]] == ["generated", "generated"]
    assert server.log.max_in_flight == 2
    assert Counter(issue_of(b) for b in server.bodies("/api/chat")) == {1: 1, 2: 1}
    store = Store.for_repo(git_repo)
    for item in data["items"]:
        record = store.generation(item["generation_id"])
        assert record is not None and record.model_profile == "oll" and record.proposal
