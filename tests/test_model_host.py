"""The model host: llama.cpp in a child process; its crashes are typed failures, never the app's.

The host is crashed on purpose with the child-only test hook (``AGENT_TUI_HOST_CRASH``,
``engine.generate.backends.model_host``): SIGSEGV, SIGABRT and SIGKILL while loading, while
evaluating the prompt and while decoding. Each ends in ``HostCrashed`` (or a raised
``ModelHostCrashed`` outside a generation), this test process survives, and the next
generation on the same backend starts a new host and runs. Outcomes of the real model are
asserted only as far as they hold for any answer.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main as cli_main
from engine.cli.exitcodes import ERROR, INVALID, LOOPING, OK, TRUNCATED
from engine.core.config import LlamaCppProfile
from engine.core.errors import ModelHostCrashed
from engine.core.events import (
    BackendFailed,
    Cancelled,
    Finished,
    GenerationEvent,
    GenerationFailed,
    HostCrashed,
    PromptProcessed,
    ProposalUpdated,
    TokensGenerated,
)
from engine.generate import backends
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.host_child import _coalesce
from engine.generate.backends.host_process import CANCEL_GRACE_S, log_path
from engine.generate.backends.model_host import HostedLlamaBackend
from tests import cpu_variant
from tests.conftest import trust_repo_config
from tests.test_tui_flow import describe, github_repo, open_issue, wait_for  # noqa: F401

pytestmark = pytest.mark.model

MESSAGES = [
    {"role": "system", "content": "Reply with one JSON object for the change."},
    {"role": "user", "content": "Issue #1: fix the typo 'recieve' in app/utils.py."},
]
MOMENTS = {
    "load": "while loading the model",
    "prompt": "while evaluating the prompt",
    "decode": "while decoding",
}
#: any honest ending of a small model's answer under a small budget
RAN = (Finished, GenerationFailed)


def _profile(model_path: Path) -> LlamaCppProfile:
    return LlamaCppProfile(
        backend="llama_cpp",
        model_path=str(model_path),
        chat_format="gemma",
        n_ctx=1024,
        max_tokens=16,
        temperature=0.0,
        n_threads=cpu_variant.N_THREADS,
        n_batch=cpu_variant.N_BATCH,
    )


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The crash hook's spec file, read by the hosts at every moment (so a test can arm a host
    that is already running, and the next test reuses the host that replaced it)."""
    folder = tmp_path_factory.mktemp("hook")
    os.environ["AGENT_TUI_HOST_CRASH_FILE"] = str(folder / "spec")
    os.environ["AGENT_TUI_HOST_CRASH_ONCE"] = str(folder / "fired")
    yield folder
    del os.environ["AGENT_TUI_HOST_CRASH_FILE"]
    del os.environ["AGENT_TUI_HOST_CRASH_ONCE"]


@pytest.fixture(scope="module")
def hosted(embedded_model_path: Path, hook_dir: Path) -> Iterator[HostedLlamaBackend]:
    """One hosted backend for the module: each crash test arms the hook, crashes the running
    host, and leaves the host that replaced it to the next test."""
    backend = HostedLlamaBackend("hosted", _profile(embedded_model_path))
    yield backend
    backend.close()


def _arm(hook_dir: Path, spec: str) -> None:
    """Crash the next host that gets to ``spec``'s moment (once)."""
    (hook_dir / "fired").unlink(missing_ok=True)
    (hook_dir / "spec").write_text(spec)


def _crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spec: str) -> None:
    """For hosts started by this test only (the app's own backends)."""
    monkeypatch.setenv("AGENT_TUI_HOST_CRASH", spec)
    monkeypatch.setenv("AGENT_TUI_HOST_CRASH_ONCE", str(tmp_path / "crashed-once"))
    monkeypatch.delenv("AGENT_TUI_HOST_CRASH_FILE", raising=False)


def _run(backend: Any, cancel: threading.Event | None = None) -> list[GenerationEvent]:
    events = list(backend.generate(GenerationRequest(messages=MESSAGES, max_tokens=12), cancel))
    finals = [e for e in events if isinstance(e, Finished | GenerationFailed)]
    assert len(finals) == 1 and events[-1] is finals[0]
    return events


def _assert_runs_again(backend: HostedLlamaBackend) -> None:
    final = _run(backend)[-1]
    assert isinstance(final, RAN) and not isinstance(final, BackendFailed), final
    assert backend.host_pid is not None


@pytest.mark.parametrize("how", ["SIGSEGV", "SIGABRT", "SIGKILL"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_dead_host_is_a_typed_failure_and_the_next_generation_runs(
    hosted: HostedLlamaBackend, hook_dir: Path, moment: str, how: str
) -> None:
    if moment == "load":
        hosted.close()  # loading happens once per host
    _arm(hook_dir, f"{moment}:{how}")
    events = _run(hosted)
    final = events[-1]
    assert isinstance(final, HostCrashed) and final.kind == "host_crashed"
    assert final.signal == how and final.exit_code is None
    assert MOMENTS[moment] in final.message
    assert "n_ctx=1024" in final.message and "n_gpu_layers=0" in final.message
    assert "smaller n_ctx" in final.hint and "server profile" in final.hint
    assert "llama-hosted.log" in final.hint
    assert any("test hook" in line for line in final.log_tail)  # the host's last stderr lines
    if moment == "decode":  # what streamed before the crash is kept
        assert final.raw.startswith('{"branch_suffix"') and final.partial is not None
        assert any(isinstance(e, TokensGenerated) for e in events)
    else:
        assert not any(isinstance(e, TokensGenerated) for e in events)
    assert hosted.host_pid is None
    _assert_runs_again(hosted)


def test_exit_codes_and_a_crash_outside_a_generation_are_typed(
    hosted: HostedLlamaBackend, embedded_backend: Any, hook_dir: Path
) -> None:
    hosted.close()
    _arm(hook_dir, "load:exit3")
    with pytest.raises(ModelHostCrashed) as info:
        hosted.count_tokens(MESSAGES)
    assert info.value.exit_code == 3 and info.value.signal == ""
    assert "exited with code 3" in info.value.message and "while loading" in info.value.message
    # the next call starts a new host; it counts exactly what the in-process backend evaluates
    assert hosted.prompt_tokens(MESSAGES) == embedded_backend.prompt_tokens(MESSAGES)
    assert hosted.count_text("hello world") == embedded_backend.count_text("hello world")


def test_cancel_stops_the_host_loop_and_the_host_stays(hosted: HostedLlamaBackend) -> None:
    hosted.load()
    pid = hosted.host_pid
    cancel = threading.Event()
    seen: list[GenerationEvent] = []
    for event in hosted.generate(GenerationRequest(messages=MESSAGES, max_tokens=200), cancel):
        seen.append(event)
        if isinstance(event, TokensGenerated):
            cancel.set()
    assert isinstance(seen[-1], Cancelled)
    assert seen[-1].stats.completion_tokens < 200
    assert hosted.host_pid == pid  # a prompt cancel does not cost the host


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T"
    except OSError:
        return False


def test_a_host_that_does_not_answer_a_cancel_is_killed_after_two_seconds(
    hosted: HostedLlamaBackend, hook_dir: Path
) -> None:
    _arm(hook_dir, "decode:SIGSTOP")  # the host freezes mid-decoding
    cancel = threading.Event()
    events: list[GenerationEvent] = []
    cancelled_at = 0.0
    for event in hosted.generate(GenerationRequest(messages=MESSAGES, max_tokens=200), cancel):
        events.append(event)
        if isinstance(event, TokensGenerated) and not cancel.is_set():
            pid = hosted.host_pid
            assert pid is not None
            deadline = time.monotonic() + 60
            while not _stopped(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            cancel.set()
            cancelled_at = time.monotonic()
    waited = time.monotonic() - cancelled_at
    final = events[-1]
    assert isinstance(final, Cancelled) and "restarted" in final.message
    assert CANCEL_GRACE_S - 0.1 <= waited < CANCEL_GRACE_S + 3
    _assert_runs_again(hosted)


def test_coalesce_merges_text_and_keeps_the_newest_partial() -> None:
    events: list[GenerationEvent] = [
        PromptProcessed(10, 0, 0.1),
        TokensGenerated("a", 1, 1.0, 0.1),
        ProposalUpdated({"b": ""}),
        TokensGenerated("b", 2, 2.0, 0.2),
        ProposalUpdated({"b": "x"}),
    ]
    out = _coalesce(events)
    assert out[0] == events[0]
    assert out[1] == TokensGenerated("ab", 2, 2.0, 0.2)
    assert out[2] == ProposalUpdated({"b": "x"})
    assert len(out) == 3


def test_the_registry_runs_llama_cpp_profiles_in_a_host() -> None:
    assert backends.backend_class("llama_cpp") is HostedLlamaBackend


# ------------------------------------------------------------------------------------------
# Through the app's front ends


@pytest.fixture
def tiny_repo(git_repo: Path, embedded_model_path: Path) -> Iterator[Path]:
    (git_repo / ".agent-tui.toml").write_text(
        'default_model = "tiny"\n[models.tiny]\nbackend = "llama_cpp"\n'
        f'model_path = "{embedded_model_path}"\nchat_format = "gemma"\nn_ctx = 1024\n'
        f"max_tokens = 96\nn_threads = {cpu_variant.N_THREADS}\nn_batch = {cpu_variant.N_BATCH}\n"
    )
    trust_repo_config(git_repo)  # a repository's model profile applies once trusted
    (git_repo / "prompt.json").write_text(json.dumps(MESSAGES))
    yield git_repo
    inst = backends._instances.pop("tiny", None)
    if inst is not None:
        inst.close()


@pytest.mark.parametrize(
    "spec", ["load:SIGSEGV", "prompt:SIGABRT", "decode:SIGKILL"], ids=lambda s: s
)
def test_cli_generate_exits_7_with_the_crash_and_the_next_run_works(
    tiny_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    spec: str,
) -> None:
    _crash(monkeypatch, tmp_path, spec)
    argv = ["generate", "--repo", str(tiny_repo), "--prompt-file", str(tiny_repo / "prompt.json")]
    rc = cli_main([*argv, "--json", "--max-tokens", "8"])
    out = capfd.readouterr()
    assert rc == ERROR
    result = json.loads(out.out)
    assert result["status"] == "host_crashed"
    moment, _, how = spec.partition(":")
    assert how in out.err and MOMENTS[moment] in out.err and "hint:" in out.err
    # the same process, the same profile: a new host answers
    rc = cli_main([*argv, "--max-tokens", "8"])
    out = capfd.readouterr()
    assert rc in (OK, TRUNCATED, LOOPING, INVALID)
    assert "died" not in out.err


def test_llama_logs_stay_off_the_terminal_unless_verbose(
    tiny_repo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "--repo", str(tiny_repo), "--prompt-file", str(tiny_repo / "prompt.json")]
    cli_main([*argv, "--max-tokens", "4"])
    quiet = capfd.readouterr().err
    assert "llama_" not in quiet and "load_tensors" not in quiet
    assert "llama_context" in log_path("tiny").read_text()
    backends._instances.pop("tiny").close()  # --verbose applies to hosts started after it
    cli_main(["--verbose", *argv, "--max-tokens", "4"])
    loud = capfd.readouterr().err
    assert "llama_context" in loud
    from engine.generate.backends.host_process import set_log_llama

    set_log_llama(False)


def test_doctor_loads_the_gguf_in_a_child_that_may_crash(
    tiny_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    def loadable() -> list[dict[str, Any]]:
        rc = cli_main(["doctor", "--repo", str(tiny_repo), "--json"])
        assert rc in (OK, 1)
        out = capfd.readouterr()
        assert "llama_" not in out.err
        return [r for r in json.loads(out.out)["checks"] if r["name"] == "loadable"]

    rows = loadable()
    assert rows and all(r["detail"] == "GGUF parsed, vocabulary 262144 tokens" for r in rows)
    _crash(monkeypatch, tmp_path, "load:SIGSEGV")  # the first check's child crashes
    rows = loadable()
    assert rows[0]["status"] == "fail" and "SIGSEGV" in rows[0]["detail"]
    assert all(r["status"] == "ok" for r in rows[1:])


# ------------------------------------------------------------------------------------------
# The TUI


@pytest.mark.parametrize("spec", ["load:SIGABRT", "decode:SIGSEGV"], ids=lambda s: s)
async def test_the_tui_survives_a_dead_host_and_generates_again(
    github_repo: Path,  # noqa: F811 - the TUI flow's fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    spec: str,
) -> None:
    from engine.core.config import load_config
    from tui.app import AgentTuiApp
    from tui.screens.error import ErrorModal
    from tui.screens.generating import GeneratingScreen
    from tui.screens.issue import IssueScreen
    from tui.screens.preview import PreviewScreen

    moment, _, how = spec.partition(":")
    config = Path(os.environ["AGENT_TUI_CONFIG"])  # short answers: the crash is under test
    text = config.read_text().replace(
        "max_tokens = 512", f"max_tokens = 24\nn_threads = {cpu_variant.N_THREADS}"
    )
    text = text.replace("n_ctx = 1536", "n_ctx = 1024")
    config.write_text(text)
    backends.close_all()  # the app's host must be a new one, started with the hook armed
    _crash(monkeypatch, tmp_path, spec)
    app = AgentTuiApp(github_repo, load_config(github_repo))
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            if moment == "load":
                # the Issue screen loads the model to count the prompt's tokens: the crash is
                # the one error modal, and the app goes on
                issues = await _open_issue_screen(pilot)
                deadline = time.monotonic() + 120
                while not isinstance(app.screen, ErrorModal):  # a failed worker: no wait_for
                    assert time.monotonic() < deadline, describe(app.screen)
                    await pilot.pause(0.05)
                modal = app.screen
                assert isinstance(modal, ErrorModal)
                assert modal.error_title == "The model crashed"
                assert how in modal.message and MOMENTS["load"] in modal.message
                assert app.model_state.startswith("crashed")  # the badge no longer says loaded
                await pilot.press("escape")
                assert app.screen is issues
            else:
                await open_issue(pilot)
            await pilot.press("g")
            screen = app.screen
            assert isinstance(screen, GeneratingScreen)
            if moment != "load":
                await wait_for(pilot, lambda: not screen.running, "the crash")
                failure = screen.failure
                assert isinstance(failure, HostCrashed) and failure.signal == how
                assert app.model_state.startswith("crashed")  # the badge no longer says loaded
                assert app.screen is screen  # still on screen, with what to try
                if moment == "decode":  # the partial proposal stays on screen
                    assert screen.partial is not None and "branch_suffix" in screen.partial
                await pilot.press("r")  # the next generation starts a new host
            await wait_for(
                pilot,
                lambda: app.screen is not screen or not screen.running,
                "the generation on a new host",
            )
            assert isinstance(app.screen, PreviewScreen) or not isinstance(
                screen.failure, BackendFailed
            ), describe(app.screen)
            assert not isinstance(app.screen, IssueScreen | ErrorModal)
            if isinstance(app.screen, PreviewScreen):  # the new host answered
                assert app.model_state == "loaded"
    finally:
        backends.close_all()


async def _open_issue_screen(pilot: Any) -> Any:
    from tui.screens.issue import IssueScreen
    from tui.screens.issues import IssuesScreen
    from tui.widgets.issue_table import IssueTable

    app = pilot.app
    await wait_for(
        pilot,
        lambda: (
            isinstance(app.screen, IssuesScreen) and app.screen.query_one(IssueTable).row_count > 0
        ),
        "the issue list",
    )
    await pilot.press("enter")

    def issue_screen() -> Any:
        # the load's crash can push its modal over the Issue screen before this loop looks
        return next((s for s in app.screen_stack if isinstance(s, IssueScreen)), None)

    await wait_for(pilot, lambda: issue_screen() is not None, "the issue screen")
    return issue_screen()


# ------------------------------------------------------------------------------------------
# The batch runner


@pytest.fixture
def batch_repo(
    git_repo: Path, embedded_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    from tests.cli_repo import LLAMA_NAME, llama_profile, prepare_repo, simple_issues

    prepare_repo(git_repo, simple_issues(1, 2))
    config = git_repo.parent / "config.toml"
    config.write_text(
        llama_profile(embedded_model_path).replace("max_tokens = 160", "max_tokens = 48")
    )
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    backends.close_all()  # a new host, started with this test's hook
    yield git_repo
    inst = backends._instances.pop(LLAMA_NAME, None)
    if inst is not None:
        inst.close()


def test_batch_marks_the_crashed_issue_failed_and_goes_on(
    batch_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _crash(monkeypatch, tmp_path, "decode:SIGABRT")
    cli_main(["batch", "--label", "easy", "--repo", str(batch_repo), "--json"])
    items = {i["issue_number"]: i for i in json.loads(capfd.readouterr().out)["items"]}
    assert items[1]["state"] == "failed"
    assert items[1]["detail"].startswith("host_crashed:") and "SIGABRT" in items[1]["detail"]
    assert "while decoding" in items[1]["detail"]
    # the next issue ran on a new host: whatever the small model wrote, it was not a crash
    assert items[2]["state"] != "pending" and "host_crashed" not in items[2]["detail"]


def test_batch_whose_model_dies_loading_stops_with_exit_7_and_runs_again(
    batch_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _crash(monkeypatch, tmp_path, "load:SIGKILL")
    argv = ["batch", "--issues", "1", "--repo", str(batch_repo)]
    assert cli_main(argv) == ERROR  # loaded before any issue starts: the batch cannot run
    err = capfd.readouterr().err
    assert "The model crashed" in err and "SIGKILL" in err and "hint:" in err
    cli_main([*argv, "--json"])  # the same process, the same profile: a new host
    items = json.loads(capfd.readouterr().out)["items"]
    assert items[0]["state"] != "pending" and "host_crashed" not in items[0]["detail"]


def test_a_missing_model_is_the_typed_load_error_and_a_big_log_is_rotated(
    tmp_path: Path,
) -> None:
    from engine.core.errors import ModelLoadError
    from engine.generate.backends.host_process import LOG_ROTATE_BYTES

    log = log_path("rotating")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"x" * (LOG_ROTATE_BYTES + 1))
    profile = _profile(tmp_path / "absent.gguf")
    backend = HostedLlamaBackend("rotating", profile)
    try:
        with pytest.raises(ModelLoadError, match="does not exist"):  # the host's own error
            backend.count_text("hello")
        assert not isinstance(backend.last_crash, ModelHostCrashed)  # no crash: a typed error
        assert backend.host_pid is not None  # the host is fine and stays
    finally:
        backend.close()
    assert log.with_name(log.name + ".1").stat().st_size == LOG_ROTATE_BYTES + 1
    assert log.stat().st_size < LOG_ROTATE_BYTES


def test_the_log_llama_setting_turns_the_echo_on(git_repo: Path) -> None:
    import argparse

    from engine.cli.common import load
    from engine.generate.backends.host_process import log_llama, set_log_llama

    (git_repo / ".agent-tui.toml").write_text("[generation]\nlog_llama = true\n")
    set_log_llama(False)
    try:
        load(argparse.Namespace(repo=git_repo))
        assert log_llama() is True
    finally:
        set_log_llama(False)
