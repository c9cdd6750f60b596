"""The OpenAI-compatible backend against a loopback server answering with the real embedded
model, and once against llama-cpp-python's own server (a real server nobody here wrote)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.core.config import OpenAIProfile, parse_profile
from engine.core.events import (
    BackendFailed,
    Cancelled,
    Finished,
    GenerationEvent,
    InvalidAnswer,
    PromptProcessed,
    PromptTooLong,
    PromptTruncated,
    TokensGenerated,
    Truncated,
)
from engine.flow.doctor import check_openai
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.http import RetryPolicy
from engine.generate.backends.openai_compat import (
    OpenAICompatBackend,
    server_flavour,
    structure_only,
)
from tests.conftest import REPO_ROOT
from tests.fake_servers import (
    FREE_TEXT_ANSWER,
    GREETING_MESSAGES,
    OPENAI_MODEL,
    PROPOSAL_MESSAGES,
    FakeModelServer,
)

pytestmark = pytest.mark.model

FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.05)
KEY_VAR = "AGENT_TUI_TEST_LLM_KEY"
SECRET = "sk-test-0123456789abcdef"
StartServer = Callable[..., FakeModelServer]


def profile(base_url: str, **overrides: Any) -> OpenAIProfile:
    data: dict[str, Any] = {
        "backend": "openai",
        "base_url": base_url,
        "model": OPENAI_MODEL,
        "n_ctx": 2048,
        "max_tokens": 96,
        "temperature": 0.0,
        **overrides,
    }
    result = parse_profile(data)
    assert isinstance(result, OpenAIProfile)
    return result


def run(backend: OpenAICompatBackend, request: GenerationRequest) -> list[GenerationEvent]:
    return list(backend.generate(request))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_streamed_generation_validates_with_json_schema_and_the_key_from_env(
    fake_model_server: StartServer, embedded_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)
    srv = fake_model_server(api_key=SECRET)
    backend = OpenAICompatBackend("a", profile(srv.v1, api_key_env=KEY_VAR, top_k=20, seed=3))
    request = GenerationRequest(messages=PROPOSAL_MESSAGES, max_files=1)
    events = run(backend, request)

    final = events[-1]
    assert isinstance(final, Finished), final
    assert isinstance(events[0], PromptProcessed)
    texts = [e.text for e in events if isinstance(e, TokensGenerated)]
    assert "".join(texts) == final.raw == srv.log.answers[-1][0]
    assert final.proposal.branch_suffix == "add-hello"

    (body,) = srv.bodies("/v1/chat/completions")
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "change_proposal", "schema": request.schema, "strict": True},
    }
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_k"], body["seed"]) == (
        96,
        0.0,
        20,
        3,
    )
    assert srv.log.headers[-1]["Authorization"] == f"Bearer {SECRET}"
    # the usage the server reported: the true prompt count
    assert final.stats.prompt_tokens == embedded_backend.count_tokens(PROPOSAL_MESSAGES)
    assert final.stats.completion_tokens == srv.log.answers[-1][1]
    assert final.stats.finish_reason == "stop" and final.stats.tokens_per_s > 0
    assert SECRET not in repr(events)

    rows = {r.name: r for r in check_openai("a", backend.profile)}
    assert rows["server"].status == "ok" and rows["model"].status == "ok"
    assert rows["context length"].detail.startswith("model context 32768")


def test_json_schema_rejected_falls_back_once_to_json_object_and_remembers(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(reject_json_schema=True)
    backend = OpenAICompatBackend("a", profile(srv.v1))
    request = GenerationRequest(PROPOSAL_MESSAGES, max_files=1, max_tokens=8)
    final = run(backend, request)[-1]
    assert isinstance(final, Truncated), final  # it generated, under the fallback
    assert server_flavour(srv.v1) == "json_object"
    again = OpenAICompatBackend("b", profile(srv.v1))  # another profile, the same server
    assert isinstance(run(again, request)[-1], Truncated)
    kinds = [b["response_format"]["type"] for b in srv.bodies("/v1/chat/completions")]
    assert kinds == ["json_schema", "json_object", "json_object"]
    sent = srv.bodies("/v1/chat/completions")[1]["response_format"]["schema"]
    assert sent == structure_only(request.schema)
    assert "pattern" not in str(sent) and "maxLength" not in str(sent)


def test_server_down_is_a_clear_failure_after_retries() -> None:
    port = free_port()
    backend = OpenAICompatBackend("a", profile(f"http://127.0.0.1:{port}/v1"), retry=FAST_RETRY)
    t0 = time.monotonic()
    (final,) = run(backend, GenerationRequest(PROPOSAL_MESSAGES, max_files=1))
    assert isinstance(final, BackendFailed)
    assert f"http://127.0.0.1:{port}/v1 is not reachable" in final.message
    assert time.monotonic() - t0 >= 0.05 + 0.1
    (row,) = check_openai("a", backend.profile)
    assert row.status == "fail" and "not reachable" in row.detail


def test_a_connect_error_is_retried_until_the_server_comes_up(embedded_backend: Any) -> None:
    port = free_port()
    started: list[FakeModelServer] = []

    def start_late() -> None:
        time.sleep(0.3)
        started.append(FakeModelServer(embedded_backend, port=port).start())

    late = threading.Thread(target=start_late)
    late.start()
    try:
        backend = OpenAICompatBackend(
            "a",
            profile(f"http://127.0.0.1:{port}/v1"),
            retry=RetryPolicy(attempts=8, backoff_s=0.1, factor=1.5),
        )
        final = run(backend, GenerationRequest(PROPOSAL_MESSAGES, max_files=1, max_tokens=6))[-1]
        late.join()
        assert isinstance(final, Truncated), final
        assert len(started[0].bodies("/v1/chat/completions")) == 1
    finally:
        late.join()
        for srv in started:
            srv.stop()


def test_model_not_served_and_bad_keys_are_typed_failures_without_the_key(
    fake_model_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = fake_model_server(api_key=SECRET)
    request = GenerationRequest(PROPOSAL_MESSAGES, max_files=1)

    missing = OpenAICompatBackend("a", profile(srv.v1, api_key_env=KEY_VAR))
    (final,) = run(missing, request)
    assert isinstance(final, BackendFailed)
    assert KEY_VAR in final.message and f"export {KEY_VAR}" in final.hint
    assert srv.bodies("/v1/chat/completions") == []

    monkeypatch.setenv(KEY_VAR, "sk-wrong-" + SECRET)
    (final,) = run(missing, request)
    assert isinstance(final, BackendFailed)
    assert "HTTP 401" in final.message and KEY_VAR in final.hint
    assert SECRET not in final.message + final.hint

    monkeypatch.setenv(KEY_VAR, SECRET)
    other = OpenAICompatBackend("a", profile(srv.v1, api_key_env=KEY_VAR, model="qwen-32b"))
    (final,) = run(other, request)
    assert isinstance(final, BackendFailed)
    assert "'qwen-32b' is not served" in final.message
    rows = {r.name: r for r in check_openai("a", other.profile)}
    assert rows["model"].status == "fail" and OPENAI_MODEL in rows["model"].detail


def test_an_answer_ignoring_the_schema_names_the_server(fake_model_server: StartServer) -> None:
    srv = fake_model_server(ignore_schema="json")
    backend = OpenAICompatBackend("a", profile(srv.v1))
    final = run(backend, GenerationRequest(GREETING_MESSAGES, max_files=1))[-1]
    assert isinstance(final, InvalidAnswer), final
    assert srv.v1 in final.message and OPENAI_MODEL in final.message
    assert "JSON-schema constraint" in final.hint
    assert final.raw == srv.log.answers[-1][0]


def test_a_free_text_answer_is_an_invalid_answer_naming_the_model_stopped_early(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(ignore_schema="text")  # the server drops response_format
    backend = OpenAICompatBackend("a", profile(srv.v1, max_tokens=400))
    final = run(backend, GenerationRequest(GREETING_MESSAGES, max_files=1))[-1]
    assert isinstance(final, InvalidAnswer), final
    assert f"the answer of {OPENAI_MODEL!r} served at {srv.v1}" in final.message
    assert f"not a JSON object: the answer starts with '{FREE_TEXT_ANSWER[:10]}" in final.message
    assert "JSON-schema constraint" in final.hint
    assert final.errors and final.errors[0].startswith("not a JSON object")
    assert FREE_TEXT_ANSWER.startswith(final.raw) and 80 <= len(final.raw) < 200
    assert srv.wait_idle()
    assert srv.log.disconnects == 1 and srv.log.completed == 0  # stopped, not read to 400


def test_length_truncation(fake_model_server: StartServer) -> None:
    srv = fake_model_server()
    backend = OpenAICompatBackend("a", profile(srv.v1))
    final = run(backend, GenerationRequest(PROPOSAL_MESSAGES, max_files=1, max_tokens=10))[-1]
    assert isinstance(final, Truncated), final
    assert final.stats.finish_reason == "length"
    assert srv.bodies("/v1/chat/completions")[0]["max_tokens"] == 10
    assert final.partial and "branch_suffix" in final.partial


def test_prompt_cut_by_the_server_and_context_errors_are_typed(
    fake_model_server: StartServer,
) -> None:
    messages = [{"role": "system", "content": "Keep the change small. " * 40}, *PROPOSAL_MESSAGES]
    cut = fake_model_server(context_cap=40)
    backend = OpenAICompatBackend("a", profile(cut.v1))
    final = run(backend, GenerationRequest(messages, max_files=1, max_tokens=4))[-1]
    assert isinstance(final, PromptTruncated), final
    assert final.evaluated_tokens == 40 and final.sent_tokens == backend.count_tokens(messages)

    strict = fake_model_server(context_length=128, enforce_context=True)
    backend = OpenAICompatBackend("a", profile(strict.v1))
    (final,) = run(backend, GenerationRequest(messages, max_files=1, max_tokens=16))
    assert isinstance(final, PromptTooLong), final
    assert final.n_ctx == 128 and final.reserved == 16 and final.prompt_tokens > 112


def test_cancel_closes_the_stream(fake_model_server: StartServer) -> None:
    srv = fake_model_server(delay_s=0.1)
    backend = OpenAICompatBackend("a", profile(srv.v1))
    cancel = threading.Event()
    events: list[GenerationEvent] = []
    set_at = 0.0
    for event in backend.generate(GenerationRequest(PROPOSAL_MESSAGES, max_files=1), cancel):
        events.append(event)
        if sum(isinstance(e, TokensGenerated) for e in events) == 3 and not cancel.is_set():
            cancel.set()
            set_at = time.monotonic()
    assert isinstance(events[-1], Cancelled), events[-1]
    assert time.monotonic() - set_at < 0.5
    assert srv.wait_idle()
    assert srv.log.disconnects == 1 and srv.log.completed == 0


def test_a_stream_that_dies_mid_answer_is_reported_never_resent(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(drop_after=4)
    backend = OpenAICompatBackend("a", profile(srv.v1))
    final = run(backend, GenerationRequest(PROPOSAL_MESSAGES, max_files=1))[-1]
    assert isinstance(final, BackendFailed), final
    assert "not retried" in final.message and final.raw
    assert len(srv.bodies("/v1/chat/completions")) == 1


def test_concurrency_is_bounded_per_server(fake_model_server: StartServer) -> None:
    srv = fake_model_server(delay_s=0.02)
    backend = OpenAICompatBackend("a", profile(srv.v1, concurrency=2))
    finals: list[GenerationEvent] = []

    def one() -> None:
        request = GenerationRequest(PROPOSAL_MESSAGES, max_files=1, max_tokens=6)
        finals.append(run(backend, request)[-1])

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(finals) == 3 and all(isinstance(f, Truncated) for f in finals), finals
    assert srv.log.max_in_flight == 2  # two at once, never three
    assert sorted(f.raw for f in finals if isinstance(f, Truncated)) == sorted(
        text for text, _, _ in srv.log.answers
    )


# -- llama-cpp-python's own server ------------------------------------------------------------


@pytest.fixture
def llama_cpp_server(embedded_model_path: Path, tmp_path: Path) -> Iterator[str]:
    """``python -m llama_cpp.server`` on the embedded model; yields its ``/v1`` URL.

    Started through ``tests/llama_server_main.py``, which gives the server's model load the
    engine's AMX safeguard (nothing else changes).
    """
    pytest.importorskip("uvicorn", reason="llama-cpp-python[server] extras are not installed")
    pytest.importorskip("sse_starlette")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tests.llama_server_main",
        "--model",
        str(embedded_model_path),
        "--model_alias",
        OPENAI_MODEL,
        "--chat_format",
        "gemma",
        "--n_ctx",
        "2048",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--verbose",
        "False",
    ]
    log = tmp_path / "llama_cpp_server.log"
    with log.open("wb") as sink:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ), cwd=REPO_ROOT
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_llama_cpp_python_server_end_to_end(llama_cpp_server: str) -> None:
    backend = OpenAICompatBackend("real", profile(llama_cpp_server))
    probe = backend.probe()
    assert probe.reachable and probe.model_present
    events = run(backend, GenerationRequest(PROPOSAL_MESSAGES, max_files=1))
    final = events[-1]
    # it answers HTTP 500 "Input should be 'text' or 'json_object'" to json_schema: the backend
    # fell back to json_object + schema, remembered it, and the answer validated
    assert server_flavour(llama_cpp_server) == "json_object"
    assert isinstance(final, Finished), final
    assert final.proposal.files[0].path == "hello.txt"
    assert "".join(e.text for e in events if isinstance(e, TokensGenerated)) == final.raw
