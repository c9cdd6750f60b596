"""The Ollama backend against a loopback Ollama server answering with the real embedded model.

Every answer on the wire is sampled by the Gemma model under the schema the backend sent
(``tests/fake_servers.py``); the knobs make the server misbehave the way real ones do.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from engine.core.config import OllamaProfile, parse_profile
from engine.core.events import (
    BackendFailed,
    Cancelled,
    Finished,
    GenerationEvent,
    InvalidAnswer,
    PromptProcessed,
    PromptTooLong,
    PromptTruncated,
    ProposalUpdated,
    TokensGenerated,
    Truncated,
)
from engine.flow.doctor import check_ollama
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.http import RetryPolicy
from engine.generate.backends.ollama import ALL_GPU_LAYERS, OllamaBackend, prompt_eval_total
from engine.generate.tokens import TokenCalibration
from tests.fake_servers import (
    FREE_TEXT_ANSWER,
    GREETING_MESSAGES,
    OLLAMA_MODEL,
    PROPOSAL_MESSAGES,
    FakeModelServer,
)

pytestmark = pytest.mark.model

FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.05)
StartServer = Callable[..., FakeModelServer]


def profile(host: str | None, **overrides: Any) -> OllamaProfile:
    data: dict[str, Any] = {
        "backend": "ollama",
        "model": OLLAMA_MODEL,
        "n_ctx": 2048,
        "max_tokens": 96,
        "temperature": 0.0,
        **overrides,
    }
    if host is not None:
        data["host"] = host
    result = parse_profile(data)
    assert isinstance(result, OllamaProfile)
    return result


def run(backend: OllamaBackend, request: GenerationRequest, **kw: Any) -> list[GenerationEvent]:
    return list(backend.generate(request, **kw))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def long_messages() -> list[dict[str, str]]:
    """A system prompt of a few hundred tokens in front of the proposal prompt."""
    rules = "\n".join(
        f"Rule {i}: keep the change small, explain it in the pull request body, and never "
        f"touch files the issue does not mention (rule {i} of the review checklist)."
        for i in range(1, 7)
    )
    return [{"role": "system", "content": rules}, *PROPOSAL_MESSAGES]


def test_streamed_generation_validates_and_sends_every_option(
    fake_model_server: StartServer, embedded_backend: Any
) -> None:
    srv = fake_model_server()
    backend = OllamaBackend(
        "o",
        profile(srv.url, n_gpu_layers=-1, keep_alive="30m", top_p=0.95, top_k=20, seed=7),
    )
    request = GenerationRequest(messages=PROPOSAL_MESSAGES, max_files=1)
    events = run(backend, request)

    final = events[-1]
    assert isinstance(final, Finished), final
    assert isinstance(events[0], PromptProcessed)
    texts = [e.text for e in events if isinstance(e, TokensGenerated)]
    assert "".join(texts) == final.raw == srv.log.answers[-1][0]
    assert any(isinstance(e, ProposalUpdated) for e in events)
    assert final.proposal.files[0].path == "hello.txt"
    assert final.proposal.branch_suffix == "add-hello"

    (body,) = srv.bodies("/api/chat")
    assert body["format"] == request.schema
    assert body["stream"] is True
    assert body["keep_alive"] == "30m"
    assert body["options"] == {
        "num_ctx": 2048,
        "num_predict": 96,
        "temperature": 0.0,
        "top_p": 0.95,
        "top_k": 20,
        "seed": 7,
        "repeat_penalty": 1.0,
        "num_gpu": ALL_GPU_LAYERS,
    }
    # the numbers are the server's: the true prompt count and the model's own token count
    assert final.stats.prompt_tokens == embedded_backend.count_tokens(PROPOSAL_MESSAGES)
    assert final.stats.completion_tokens == srv.log.answers[-1][1]
    assert final.stats.tokens_per_s > 0
    assert final.stats.finish_reason == "stop"
    assert final.stats.backend == "ollama" and final.stats.model == OLLAMA_MODEL


def test_preflight_reads_show_and_ps_honours_ollama_host_and_refuses_a_long_prompt(
    fake_model_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = fake_model_server(context_length=256)
    monkeypatch.setenv("OLLAMA_HOST", srv.url.removeprefix("http://"))
    backend = OllamaBackend("o", profile(None))
    assert backend.host == srv.url
    assert backend.model_info().context_length == 256
    assert backend.loaded() is None  # nothing generated yet: ps lists no model

    events = run(backend, GenerationRequest(messages=long_messages(), max_files=1))
    (final,) = events
    assert isinstance(final, PromptTooLong)
    assert final.n_ctx == 256 and final.reserved == 96
    assert "the model's own context is 256" in final.message
    assert srv.bodies("/api/chat") == []  # refused before sending

    rows = {r.name: r for r in check_ollama("o", backend.profile)}
    assert rows["server"].status == "ok" and srv.url in rows["server"].detail
    assert rows["model"].status == "ok"
    assert rows["context length"].status == "warn"
    assert "256" in rows["context length"].detail


def test_preflight_refuses_a_prompt_the_loaded_context_would_cut(
    fake_model_server: StartServer,
) -> None:
    # the server runs 200 tokens whatever num_ctx says (a Modelfile/env override)
    srv = fake_model_server(context_cap=200)
    srv.log.loaded_ctx = 64  # another client loaded the model with a smaller context
    backend = OllamaBackend("o", profile(srv.url))
    short = GenerationRequest(PROPOSAL_MESSAGES, max_files=1, max_tokens=8)
    assert backend.count_tokens(PROPOSAL_MESSAGES) + 8 > 64

    # first request: the loaded context is not this backend's (Ollama reloads with num_ctx)
    assert isinstance(run(backend, short)[-1], Truncated)
    assert srv.bodies("/api/chat")[0]["options"]["num_ctx"] == 2048
    assert srv.log.loaded_ctx == 200  # after num_ctx=2048 was sent: the server kept 200

    long = GenerationRequest(long_messages(), max_files=1, max_tokens=8)
    assert backend.count_tokens(long.messages) + 8 > 200  # fits 2048, not 200
    (final,) = run(backend, long)
    assert isinstance(final, PromptTooLong), final
    assert final.n_ctx == 200 and final.reserved == 8
    assert "loaded with a context of 200 although num_ctx=2048 was sent" in final.message
    assert "honour num_ctx=2048" in final.hint
    assert len(srv.bodies("/api/chat")) == 1  # refused before sending: never cut

    assert isinstance(run(backend, short)[-1], Truncated)  # a prompt that fits still goes


def test_server_down_is_an_actionable_failure() -> None:
    port = free_port()
    backend = OllamaBackend("o", profile(f"http://127.0.0.1:{port}"), retry=FAST_RETRY)
    t0 = time.monotonic()
    (final,) = run(backend, GenerationRequest(messages=PROPOSAL_MESSAGES, max_files=1))
    assert isinstance(final, BackendFailed)
    assert final.message.startswith(f"Ollama is not reachable at http://127.0.0.1:{port}")
    assert "ollama serve" in final.hint
    assert time.monotonic() - t0 >= 0.05 + 0.1  # the connect errors were retried with backoff

    (row,) = check_ollama("o", backend.profile)
    assert row.status == "fail" and "ollama serve" in row.hint


def test_model_not_pulled_says_how_to_pull_it(fake_model_server: StartServer) -> None:
    srv = fake_model_server()
    backend = OllamaBackend("o", profile(srv.url, model="qwen2.5-coder:7b"))
    (final,) = run(backend, GenerationRequest(messages=PROPOSAL_MESSAGES, max_files=1))
    assert isinstance(final, BackendFailed)
    assert "qwen2.5-coder:7b" in final.message and "not pulled" in final.message
    assert final.hint == "run `ollama pull qwen2.5-coder:7b`"
    assert srv.bodies("/api/chat") == []

    rows = {r.name: r for r in check_ollama("o", backend.profile)}
    assert rows["model"].status == "fail"
    assert OLLAMA_MODEL in rows["model"].detail  # lists what the server has
    assert rows["model"].hint == "run `ollama pull qwen2.5-coder:7b`"


def test_a_prompt_cut_by_the_server_is_caught_with_both_numbers(
    fake_model_server: StartServer, embedded_backend: Any
) -> None:
    messages = long_messages()
    true_count = embedded_backend.count_tokens(messages)
    srv = fake_model_server(context_cap=48)
    backend = OllamaBackend("o", profile(srv.url))
    expected = backend.count_tokens(messages)
    final = run(backend, GenerationRequest(messages, max_files=1, max_tokens=8))[-1]

    assert isinstance(final, PromptTruncated), final
    assert final.evaluated_tokens == 48 < true_count
    assert final.sent_tokens == expected
    assert f"evaluated 48 prompt tokens but about {expected} were sent" in final.message
    assert "loaded with a context of 48" in final.message  # from ps
    assert final.raw == srv.log.answers[-1][0]  # what the model wrote is kept
    assert backend.calibration.samples == 0  # a cut count never calibrates the estimate


def test_an_uncut_prompt_is_not_flagged_and_calibrates_the_estimate(
    fake_model_server: StartServer, embedded_backend: Any
) -> None:
    messages = long_messages()
    true_count = embedded_backend.count_tokens(messages)
    srv = fake_model_server()
    backend = OllamaBackend("o", profile(srv.url))
    final = run(backend, GenerationRequest(messages, max_files=1, max_tokens=8))[-1]
    assert isinstance(final, Truncated), final  # 8 tokens: the budget, not the prompt
    assert final.stats.prompt_tokens == true_count
    assert backend.calibration.samples == 1
    assert abs(backend.count_tokens(messages) - true_count) <= 0.05 * true_count


def test_a_cache_hit_left_out_of_prompt_eval_count_is_not_taken_for_a_cut(
    fake_model_server: StartServer, embedded_backend: Any
) -> None:
    # a build that reports only the newly evaluated tokens, and the cached ones apart
    messages = long_messages()
    true_count = embedded_backend.count_tokens(messages)
    srv = fake_model_server(prompt_cache="excluded")
    backend = OllamaBackend("o", profile(srv.url))
    request = GenerationRequest(messages, max_files=1, max_tokens=8)
    first = run(backend, request)[-1]
    assert isinstance(first, Truncated), first
    assert first.stats.prompt_tokens == true_count and first.stats.cached_prompt_tokens == 0

    again = run(backend, request)[-1]  # the same prompt: all but its last token cached
    assert isinstance(again, Truncated), again  # not PromptTruncated
    assert again.stats.prompt_tokens == true_count
    assert again.stats.cached_prompt_tokens == true_count - 1
    assert backend.calibration.samples == 2
    assert abs(backend.count_tokens(messages) - true_count) <= 0.05 * true_count


def test_a_cached_count_inside_prompt_eval_count_is_counted_once_and_a_cut_still_shows(
    fake_model_server: StartServer, embedded_backend: Any
) -> None:
    # Ollama's own definition: prompt_eval_count is the whole prompt, the cached count a part
    messages = long_messages()
    true_count = embedded_backend.count_tokens(messages)
    srv = fake_model_server(prompt_cache="included")
    backend = OllamaBackend("o", profile(srv.url))
    request = GenerationRequest(messages, max_files=1, max_tokens=8)
    run(backend, request)
    again = run(backend, request)[-1]
    assert isinstance(again, Truncated), again
    assert again.stats.prompt_tokens == true_count  # not true_count + the cached tokens
    assert again.stats.cached_prompt_tokens == true_count - 1
    assert abs(backend.count_tokens(messages) - true_count) <= 0.05 * true_count

    # the same cut prompt sent again: its kept part is cached, the cut must still show (a new
    # backend each time, e.g. a new process: one that already sent it refuses it before, by ps)
    cut = fake_model_server(context_cap=48, prompt_cache="included")
    first, again = (run(OllamaBackend("o", profile(cut.url)), request)[-1] for _ in range(2))
    assert isinstance(first, PromptTruncated), first
    assert isinstance(again, PromptTruncated), again
    assert first.evaluated_tokens == again.evaluated_tokens == 48
    assert "from its prompt cache" not in first.message
    assert "(47 of them from its prompt cache)" in again.message

    assert prompt_eval_total(None, None) is None
    assert prompt_eval_total(0, 300) == 300  # an old build that omits the count on a hit
    assert prompt_eval_total(5, 295) == 300
    assert prompt_eval_total(300, 299) == 300


def test_tokens_per_s_is_the_servers_eval_count_over_eval_duration(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(eval_duration_s=40.0)  # far slower than the chunks really came
    backend = OllamaBackend("o", profile(srv.url))
    events = run(backend, GenerationRequest(PROPOSAL_MESSAGES, max_files=1))
    final = events[-1]
    assert isinstance(final, Finished), final
    eval_count = srv.log.answers[-1][1]
    assert final.stats.completion_tokens == eval_count
    assert final.stats.tokens_per_s == pytest.approx(eval_count / 40.0)
    streamed = [e.tokens_per_s for e in events if isinstance(e, TokensGenerated)]
    assert streamed[-1] > 2 * final.stats.tokens_per_s  # the chunk rate was not used


def test_a_free_text_answer_is_an_invalid_answer_naming_the_model_stopped_early(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(ignore_schema="text")  # the server drops `format`
    backend = OllamaBackend("o", profile(srv.url, max_tokens=400))
    final = run(backend, GenerationRequest(messages=GREETING_MESSAGES, max_files=1))[-1]
    assert isinstance(final, InvalidAnswer), final
    assert f"Ollama model {OLLAMA_MODEL!r}" in final.message
    assert f"not a JSON object: the answer starts with '{FREE_TEXT_ANSWER[:10]}" in final.message
    assert "format" in final.hint
    assert final.errors and final.errors[0].startswith("not a JSON object")
    assert FREE_TEXT_ANSWER.startswith(final.raw) and 80 <= len(final.raw) < 200
    assert final.stats.completion_tokens < 100  # stopped after a preview, not at max_tokens
    assert srv.wait_idle()
    assert srv.log.disconnects == 1 and srv.log.completed == 0


def test_an_answer_ignoring_the_schema_is_an_invalid_answer_naming_the_model(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(ignore_schema="json")
    backend = OllamaBackend("o", profile(srv.url))
    final = run(backend, GenerationRequest(messages=GREETING_MESSAGES, max_files=1))[-1]
    assert isinstance(final, InvalidAnswer), final
    assert f"Ollama model {OLLAMA_MODEL!r}" in final.message
    assert "format" in final.hint
    assert final.raw == srv.log.answers[-1][0] and final.raw.startswith("{")
    assert any(e.startswith("branch_suffix") for e in final.errors)


def test_length_truncation(fake_model_server: StartServer) -> None:
    srv = fake_model_server()
    backend = OllamaBackend("o", profile(srv.url))
    request = GenerationRequest(messages=PROPOSAL_MESSAGES, max_files=1, max_tokens=10)
    final = run(backend, request)[-1]
    assert isinstance(final, Truncated), final
    assert final.limit == "max_tokens" and final.stats.finish_reason == "length"
    assert srv.bodies("/api/chat")[0]["options"]["num_predict"] == 10
    assert final.stats.completion_tokens == srv.log.answers[-1][1]
    assert final.partial and "branch_suffix" in final.partial


def test_cancel_closes_the_stream_within_a_poll(fake_model_server: StartServer) -> None:
    srv = fake_model_server(delay_s=0.1)
    backend = OllamaBackend("o", profile(srv.url))
    cancel = threading.Event()
    events: list[GenerationEvent] = []
    set_at = 0.0
    for event in backend.generate(GenerationRequest(PROPOSAL_MESSAGES, max_files=1), cancel):
        events.append(event)
        if sum(isinstance(e, TokensGenerated) for e in events) == 3 and not cancel.is_set():
            cancel.set()
            set_at = time.monotonic()
    final = events[-1]
    assert isinstance(final, Cancelled), final
    assert time.monotonic() - set_at < 0.5
    assert final.raw == "".join(e.text for e in events if isinstance(e, TokensGenerated))
    assert srv.wait_idle()
    assert srv.log.disconnects == 1 and srv.log.completed == 0  # the server stopped too


def test_a_stream_that_dies_mid_answer_is_reported_never_resent(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(drop_after=4)
    backend = OllamaBackend("o", profile(srv.url))
    final = run(backend, GenerationRequest(PROPOSAL_MESSAGES, max_files=1))[-1]
    assert isinstance(final, BackendFailed), final
    assert "not retried" in final.message and final.raw
    assert len(srv.bodies("/api/chat")) == 1


def test_concurrent_generations_each_get_their_own_stream(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server()
    backend = OllamaBackend("o", profile(srv.url))
    finals: list[GenerationEvent] = []

    def one() -> None:
        request = GenerationRequest(PROPOSAL_MESSAGES, max_files=1, max_tokens=8)
        finals.append(run(backend, request)[-1])

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(finals) == 2 and all(isinstance(f, Truncated) for f in finals), finals
    assert srv.log.max_in_flight == 2  # the requests really overlapped on the wire
    assert sorted(f.raw for f in finals if isinstance(f, Truncated)) == sorted(
        text for text, _, _ in srv.log.answers
    )


def test_calibration_tightens_only_on_real_counts() -> None:
    cal = TokenCalibration()
    messages = [{"role": "user", "content": "x" * 800}]
    assert cal.chat_tokens(messages) == 229 + 4 + 3  # ceil(800 / 3.5) + overheads
    assert cal.tolerance == 0.35
    cal.observe(messages, 207)  # 200 body tokens: 4 chars per token
    assert cal.samples == 1 and cal.chars_per_token == pytest.approx(4.0)
    assert cal.chat_tokens(messages) == 207
    assert cal.tolerance == 0.15
    cal.observe([{"role": "user", "content": "short"}], 5)  # too small to learn from
    assert cal.samples == 1
