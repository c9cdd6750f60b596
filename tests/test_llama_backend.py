"""The llama.cpp backend on the real embedded model: valid answers, typed failures, speed paths.

Every generation here is a real decode of Gemma 3 270M under the proposal grammar. The model
is small and loops often: the tests accept every honest outcome (a valid proposal, a
truncation, a detected loop) but never an invalid answer passed on as a proposal.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import llguidance
import pytest

from engine.cli import main as cli_main
from engine.cli.exitcodes import CANCELLED, ERROR, INVALID, LOOPING, OK, TRUNCATED
from engine.cli.progress import ProgressRenderer, exit_code, final_to_json
from engine.core.config import LlamaCppProfile
from engine.core.errors import ConfigError, ModelLoadError
from engine.core.events import (
    BackendFailed,
    Cancelled,
    Finished,
    GenerationEvent,
    GenerationFailed,
    InvalidAnswer,
    Looping,
    PromptProcessed,
    PromptTooLong,
    ProposalUpdated,
    TokensGenerated,
    Truncated,
)
from engine.core.models import (
    BRANCH_SUFFIX_PATTERN,
    PATH_PATTERN,
    ChangeProposal,
    proposal_json_schema,
)
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.llama_cpp import LlamaCppBackend
from engine.generate.chat_formats import format_chat, format_gemma
from engine.generate.decode import DecodeDone, DecodeOptions, PromptEvaluated, TokensDecoded
from engine.generate.sampling import SamplingParams
from tests import cpu_variant
from tests.conftest import trust_repo_config

pytestmark = pytest.mark.model

#: with a worked example the small model answers briefly (and often copies the example)
SYSTEM = (
    "You write small code changes. Reply with one JSON object and nothing else, like this "
    'example: {"branch_suffix":"fix-typo","commit_message":"fix: typo in utils",'
    '"pr_title":"Fix typo in utils","pr_body":"Fixes the typo. Closes #2","files":'
    '[{"path":"app/utils.py","content":"def receive():\\n    return True\\n"}]}'
)
#: without one it writes freely: odd paths, long strings, loops
PLAIN_SYSTEM = (
    "You are a backend developer. Answer with one JSON object: branch_suffix, "
    "commit_message, pr_title, pr_body (with 'Closes #N'), files (path and full content)."
)

ISSUES = [
    "Issue #1: add a GET /health endpoint returning {'status': 'ok'}.",
    "Issue #2: fix the typo 'recieve' in app/utils.py.",
    "Issue #3: add a User model with id, email and name to app/models/user.py.",
    "Issue #4: read DATABASE_URL from the environment in app/config.py.",
    "Issue #5: add a Dockerfile for the FastAPI app.",
    "Issue #6: add a pytest test for GET /health.",
    "Issue #7: return 404 when an item is missing in app/api/items.py.",
    "Issue #8: add a .gitignore for Python.",
    "Issue #9: log every request in app/main.py middleware.",
    "Issue #10: add a version field to the settings.",
    "Issue #11: paginate GET /api/v1/items with limit and offset query parameters.",
    "Issue #12: add CORS middleware configured from settings.allowed_origins.",
    "Issue #13: hash passwords with bcrypt in app/services/auth.py.",
    "Issue #14: add an Alembic migration that creates the orders table.",
    "Issue #15: rename the field `qty` to `quantity` in the Item schema.",
    "Issue #16: add requirements.txt entries for httpx and pytest-asyncio.",
    "Issue #17: return 422 with a clear message for a negative price.",
    "Issue #18: add a README section on running the tests.",
    "Issue #19: cache GET /api/v1/items for 30 seconds.",
    "Issue #20: add DELETE /api/v1/items/{id} with a test.",
]


def ask(issue: str, system: str = SYSTEM) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": issue}],
        max_tokens=96,
    )


def run(backend: Any, request: GenerationRequest, **kw: Any) -> list[GenerationEvent]:
    return list(backend.generate(request, **kw))


def check_final_stream(events: list[GenerationEvent]) -> GenerationEvent:
    """Exactly one final event, last."""
    finals = [e for e in events if isinstance(e, Finished | GenerationFailed)]
    assert len(finals) == 1 and events[-1] is finals[0]
    return finals[0]


def independent_matcher(backend: Any) -> Any:
    """A matcher built straight from llguidance and the schema, not through
    engine.generate.grammar."""
    tokenizer = backend.load().tokenizer()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        proposal_json_schema(), overrides={"whitespace_flexible": False}
    )
    return llguidance.LLMatcher(tokenizer, grammar, log_level=0)


def assert_valid_answer(raw: str) -> ChangeProposal:
    """Validate independently of the stream: strict JSON, the pydantic model, the regexes."""
    data = json.loads(raw)  # strict: no raw control characters
    proposal = ChangeProposal.model_validate(data)
    assert re.match(BRANCH_SUFFIX_PATTERN, proposal.branch_suffix)
    assert len(proposal.branch_suffix) <= 30
    assert all(re.match(PATH_PATTERN, f.path) for f in proposal.files)
    assert 1 <= len(proposal.files) <= 12
    assert raw == json.dumps(data, separators=(",", ":"), ensure_ascii=False) or "\\" in raw
    return proposal


# ------------------------------------------------------------------------------------------
# Valid answers


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_twenty_prompts_every_finished_answer_validates(embedded_backend: Any, mode: str) -> None:
    sampling = (
        SamplingParams(temperature=0.0)
        if mode == "greedy"
        else SamplingParams(temperature=0.8, top_p=0.95, top_k=40, seed=7)
    )
    outcomes: dict[str, int] = {}
    # twenty distinct prompts in all: each mode answers ten of them (half with the full
    # system prompt, half with a plain one)
    for n, issue in enumerate(ISSUES[0 if mode == "greedy" else 1 :: 2]):
        request = ask(issue, SYSTEM if n % 2 == 0 else PLAIN_SYSTEM)
        events = run(embedded_backend, request, sampling=sampling)
        final = check_final_stream(events)
        outcomes[type(final).__name__] = outcomes.get(type(final).__name__, 0) + 1
        assert not isinstance(final, InvalidAnswer | BackendFailed), final
        assert isinstance(final, Finished | Truncated | Looping)
        assert isinstance(events[0], PromptProcessed)
        parts: list[str] = []  # the text as a consumer rebuilds it, rewinds included
        for e in events:
            if isinstance(e, TokensGenerated):
                e.add_to(parts)
        assert "".join(parts) == final.raw
        if isinstance(final, Finished):
            proposal = assert_valid_answer(final.raw)
            assert proposal == final.proposal
            assert final.stats.finish_reason == "stop"
            assert final.stats.completion_tokens == len(embedded_backend.last_tokens)
    assert outcomes.get("Finished", 0) >= 3, outcomes


def test_same_seed_same_sampled_answer(embedded_backend: Any) -> None:
    sampling = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=1234)
    first = run(embedded_backend, ask(ISSUES[0]), sampling=sampling)
    tokens = list(embedded_backend.last_tokens)
    second = run(embedded_backend, ask(ISSUES[0]), sampling=sampling)
    assert embedded_backend.last_tokens == tokens
    assert first[-1].raw == second[-1].raw  # type: ignore[attr-defined]


def test_events_stream_the_partial_proposal(embedded_backend: Any) -> None:
    events = run(embedded_backend, ask(ISSUES[2]))
    partials = [e.partial for e in events if isinstance(e, ProposalUpdated)]
    assert partials and all(isinstance(p, dict) for p in partials)
    assert "branch_suffix" in partials[-1]
    rates = [e.tokens_per_s for e in events if isinstance(e, TokensGenerated)]
    assert rates and rates[-1] > 0
    counts = [e.completion_tokens for e in events if isinstance(e, TokensGenerated)]
    assert counts == sorted(counts)
    # the forced prefix arrives as one event, several tokens at once
    first = next(e for e in events if isinstance(e, TokensGenerated))
    assert first.text == '{"branch_suffix":"' and first.completion_tokens > 1


# ------------------------------------------------------------------------------------------
# The fast path is exact


@pytest.mark.parametrize("fast_forward", [True, False])
def test_greedy_check_first_is_token_identical_to_full_mask(
    embedded_backend: Any, fast_forward: bool
) -> None:
    # asking for pretty-printed JSON makes the model want newlines and indentation, which the
    # compact grammar refuses: the rejection path is exercised, not only the happy path
    pretty = PLAIN_SYSTEM + " Pretty-print the JSON: one key per line, indented by 4 spaces."
    schema = proposal_json_schema()
    rejections = 0
    for issue in (ISSUES[3], ISSUES[0], ISSUES[2]):
        prompt = embedded_backend.prompt_tokens(ask(issue, pretty).messages)
        runs = {}
        for check_first in (True, False):
            items = list(
                embedded_backend.decode(
                    prompt,
                    schema=schema,
                    sampling=SamplingParams(temperature=0.0),
                    max_tokens=96,
                    options=DecodeOptions(check_first=check_first, fast_forward=fast_forward),
                )
            )
            tokens = [t for i in items if isinstance(i, TokensDecoded) for t in i.tokens]
            done = items[-1]
            assert isinstance(done, DecodeDone) and done.reason in ("stop", "length")
            runs[check_first] = (tokens, done)
        fast_tokens, fast_done = runs[True]
        full_tokens, full_done = runs[False]
        assert fast_tokens == full_tokens
        assert full_done.rejections == 0 and full_done.masks == full_done.sampled
        assert fast_done.masks < fast_done.sampled / 2  # check-first skipped most masks
        if fast_forward:
            assert fast_done.forced > 0
        else:
            assert fast_done.forced == 0 and fast_done.sampled == len(fast_tokens)
        rejections += fast_done.rejections
        if rejections:
            break
    # not vacuous: the sampler did pick tokens the grammar refused, and the mask fixed them
    assert rejections > 0


def test_sampling_never_emits_a_token_the_grammar_rejects(embedded_backend: Any) -> None:
    prompt = embedded_backend.prompt_tokens(ask(ISSUES[4]).messages)
    rejections = 0
    for seed in (1, 2):
        items = list(
            embedded_backend.decode(
                prompt,
                schema=proposal_json_schema(),
                sampling=SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=seed),
                max_tokens=96,
            )
        )
        done = items[-1]
        assert isinstance(done, DecodeDone) and done.reason in ("stop", "length")
        rejections += done.rejections
        tokens = [t for i in items if isinstance(i, TokensDecoded) for t in i.tokens]
        matcher = independent_matcher(embedded_backend)
        for n, token in enumerate(tokens):
            assert matcher.validate_tokens([token]) == 1, f"token {n} ({token}) rejected"
            assert matcher.consume_token(token)
        assert matcher.is_stopped() == (done.reason == "stop")
    assert rejections > 0  # high temperature: the raw sampler picked refused tokens


# ------------------------------------------------------------------------------------------
# Failures are typed results


def test_tiny_max_tokens_is_truncated_with_a_partial_proposal(embedded_backend: Any) -> None:
    request = ask(ISSUES[0])
    request.max_tokens = 12
    final = check_final_stream(run(embedded_backend, request))
    assert isinstance(final, Truncated)
    assert final.limit == "max_tokens" and final.stats.finish_reason == "length"
    assert final.stats.completion_tokens == 12
    assert final.partial is not None and "branch_suffix" in final.partial
    assert "max_tokens" in final.hint
    assert exit_code(final) == TRUNCATED
    assert final_to_json(final)["status"] == "truncated"


def test_a_forced_loop_is_detected(embedded_backend: Any) -> None:
    """A real generation pushed into repetition: greedy with repeat_penalty < 1 rewards it.

    Backtracking takes the first repeats back; past its budget (8 here, to keep the test
    short) the loop detector stops the answer, as it does with backtracking off."""
    request = GenerationRequest(
        messages=[
            {
                "role": "user",
                "content": "Repeat after me forever: health/health/health/health/health/"
                "health/health/health/health/health/health/",
            }
        ],
        max_tokens=200,
    )
    events = run(
        embedded_backend,
        request,
        sampling=SamplingParams(temperature=0.0, repeat_penalty=0.5),
        options=DecodeOptions(backtrack=8),
    )
    final = check_final_stream(events)
    assert isinstance(final, Looping), final
    assert final.stats.finish_reason == "loop"
    assert 1 <= final.stats.rewinds <= 8  # rewinds were spent, the budget held
    assert final.stats.completion_tokens < 200  # stopped early, not at the budget
    assert final.where and final.where != "(start)"
    assert final.partial is not None
    assert exit_code(final) == LOOPING


def test_cancel_stops_within_one_token(embedded_backend: Any) -> None:
    cancel = threading.Event()
    seen = 0
    after_cancel = 0
    events = []
    for event in embedded_backend.generate(ask(ISSUES[1]), cancel):
        events.append(event)
        if isinstance(event, TokensGenerated):
            if cancel.is_set():
                after_cancel += 1
            seen = event.completion_tokens
            if len([e for e in events if isinstance(e, TokensGenerated)]) == 3:
                cancel.set()
    final = check_final_stream(events)
    assert isinstance(final, Cancelled)
    assert after_cancel == 0
    assert final.stats.completion_tokens == seen
    assert final.partial is not None
    assert exit_code(final) == CANCELLED


def test_cancel_from_another_thread_during_prompt_processing(embedded_backend: Any) -> None:
    model = embedded_backend.load()
    filler = " ".join(f"line {i}: the quick brown fox {i * 7919 % 1000}" for i in range(180))
    request = GenerationRequest(
        messages=[{"role": "user", "content": f"{time.time_ns()} {filler}"}], max_tokens=16
    )
    n_prompt = embedded_backend.count_tokens(request.messages)
    assert n_prompt > 4 * model.n_batch
    cancel = threading.Event()

    def cancel_after_first_chunk() -> None:
        start = time.monotonic()
        while time.monotonic() - start < 120:
            if model.llm.n_tokens >= model.n_batch:  # the first chunk is in: processing
                cancel.set()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=cancel_after_first_chunk)
    watcher.start()
    events = run(embedded_backend, request, cancel=cancel)
    watcher.join()
    final = check_final_stream(events)
    assert isinstance(final, Cancelled)
    assert not any(isinstance(e, PromptProcessed | TokensGenerated) for e in events)
    assert model.llm.n_tokens < n_prompt - model.n_batch  # stopped well before the end
    # the backend stays usable: the next generation works (and reuses what was evaluated)
    final = check_final_stream(run(embedded_backend, ask(ISSUES[0])))
    assert isinstance(final, Finished | Truncated | Looping)


def test_prompt_over_n_ctx_fails_before_any_decoding(embedded_backend: Any) -> None:
    model = embedded_backend.load()
    before = model.llm.n_tokens
    request = GenerationRequest(
        messages=[{"role": "user", "content": "word " * 3900}], max_tokens=512
    )
    events = run(embedded_backend, request)
    assert len(events) == 1
    final = events[0]
    assert isinstance(final, PromptTooLong)
    assert final.n_ctx == 4096 and final.reserved == 512
    assert final.prompt_tokens == embedded_backend.count_tokens(request.messages)
    assert final.prompt_tokens + 512 > 4096
    assert str(final.prompt_tokens) in final.message and "4096" in final.message
    assert model.llm.n_tokens == before  # nothing evaluated
    assert exit_code(final) == ERROR


def test_missing_model_file_is_a_clear_error_naming_the_profile(tmp_path: Path) -> None:
    profile = LlamaCppProfile(
        backend="llama_cpp", model_path=str(tmp_path / "gone.gguf"), chat_format="gemma"
    )
    backend = LlamaCppBackend("my-model", profile)
    with pytest.raises(ModelLoadError, match="my-model") as info:
        backend.count_tokens([{"role": "user", "content": "hi"}])
    assert "does not exist" in info.value.message
    events = list(backend.generate(GenerationRequest(messages=[{"role": "user", "content": "x"}])))
    assert len(events) == 1 and isinstance(events[0], BackendFailed)
    assert "my-model" in events[0].message and "does not exist" in events[0].message


def test_unloadable_gguf_is_a_model_load_error(tmp_path: Path) -> None:
    # a GGUF magic and version, then nothing: it passes the magic check, llama.cpp refuses it
    header_only = tmp_path / "header-only.gguf"
    header_only.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)
    backend = LlamaCppBackend(
        "corrupt-profile",
        LlamaCppProfile(backend="llama_cpp", model_path=str(header_only), n_ctx=512),
    )
    with pytest.raises(ModelLoadError) as info:
        backend.load()
    message = info.value.message
    assert "'corrupt-profile'" in message  # which profile
    assert f"could not load {header_only}" in message  # which file
    assert info.value.hint
    assert backend.loaded is False


# ------------------------------------------------------------------------------------------
# Prompts, token counts, prefix cache, GPU warning


def test_count_tokens_is_exactly_the_evaluated_prompt(embedded_backend: Any) -> None:
    request = ask(ISSUES[5])
    n = embedded_backend.count_tokens(request.messages)
    events = run(embedded_backend, request)
    processed = next(e for e in events if isinstance(e, PromptProcessed))
    assert processed.prompt_tokens == n
    assert embedded_backend.count_text(ISSUES[5]) < n
    assert embedded_backend.count_text("") == 0
    # the system prompt is not dropped (Gemma has no system role: it joins the first turn)
    text, has_bos = embedded_backend.format_prompt(request.messages)
    assert SYSTEM in text and not has_bos
    assert embedded_backend.prompt_tokens(request.messages)[0] == model_bos(embedded_backend)


def model_bos(backend: Any) -> int:
    return int(backend.load().llm.token_bos())


def test_prefix_cache_is_reused_and_exact(embedded_backend: Any) -> None:
    request = ask(ISSUES[7])
    embedded_backend.load().llm.reset()  # cold
    cold = run(embedded_backend, request)
    warm = run(embedded_backend, request)
    cold_p = next(e for e in cold if isinstance(e, PromptProcessed))
    warm_p = next(e for e in warm if isinstance(e, PromptProcessed))
    assert cold_p.cached_prompt_tokens == 0
    assert warm_p.cached_prompt_tokens == warm_p.prompt_tokens - 1
    assert warm[-1].raw == cold[-1].raw  # type: ignore[attr-defined]
    # a different issue after the same system prompt reuses the shared prefix
    other = run(embedded_backend, ask(ISSUES[8]))
    other_p = next(e for e in other if isinstance(e, PromptProcessed))
    assert 10 < other_p.cached_prompt_tokens < other_p.prompt_tokens - 1


def test_gpu_offload_request_warns_when_the_build_cannot(embedded_model_path: Path) -> None:
    import llama_cpp

    profile = LlamaCppProfile(
        backend="llama_cpp",
        model_path=str(embedded_model_path),
        chat_format="gemma",
        n_ctx=512,
        n_gpu_layers=-1,
    )
    backend = LlamaCppBackend("gpu-profile", profile)
    try:
        backend.load()
        if llama_cpp.llama_supports_gpu_offload():
            assert backend.warnings == []
        else:
            assert len(backend.warnings) == 1
            assert "gpu-profile" in backend.warnings[0] and "CPU" in backend.warnings[0]
    finally:
        backend.close()


def test_chat_formats() -> None:
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "bye"},
    ]
    assert format_gemma(messages) == (
        "<start_of_turn>user\nSYS\n\nhello<end_of_turn>\n"
        "<start_of_turn>model\nhi<end_of_turn>\n"
        "<start_of_turn>user\nbye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    chatml, bos = format_chat(messages, chat_format="chatml", template=None)
    assert "<|im_start|>system\nSYS" in chatml and not bos
    jinja, bos = format_chat(
        messages,
        chat_format=None,
        template="{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}",
        bos_token="<s>",
    )
    assert jinja == "<s>[system]SYS[user]hello[assistant]hi[user]bye" and bos
    with pytest.raises(ConfigError, match="'p1'.*unknown chat_format 'nope'"):
        format_chat(messages, chat_format="nope", template=None, profile_name="p1")
    with pytest.raises(ConfigError, match="no chat template") as info:
        format_chat(messages, chat_format=None, template=None, profile_name="p2")
    assert "chat_format" in info.value.hint


# ------------------------------------------------------------------------------------------
# The headless command


def test_generate_command_exit_codes_and_output(
    embedded_model_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.generate import backends

    (git_repo / ".agent-tui.toml").write_text(
        'default_model = "tiny"\n[models.tiny]\nbackend = "llama_cpp"\n'
        f'model_path = "{embedded_model_path}"\nchat_format = "gemma"\nn_ctx = 1024\n'
        f"max_tokens = 96\nn_threads = {cpu_variant.N_THREADS}\nn_batch = {cpu_variant.N_BATCH}\n"
    )
    trust_repo_config(git_repo)  # a model file needs trust
    prompt = git_repo / "prompt.json"
    prompt.write_text(json.dumps(ask(ISSUES[0]).messages))
    try:
        rc = cli_main(
            ["generate", "--repo", str(git_repo), "--prompt-file", str(prompt), "--json",
             "--max-tokens", "8"]
        )  # fmt: skip
        out = capsys.readouterr()
        assert rc == TRUNCATED
        result = json.loads(out.out)
        assert result["status"] == "truncated" and result["limit"] == "max_tokens"
        assert result["stats"]["completion_tokens"] == 8
        assert "branch_suffix" in result["partial"]
        assert "truncated" in out.err and "hint:" in out.err

        answer = git_repo / "answer.json"
        rc = cli_main(
            ["generate", "--repo", str(git_repo), "--prompt-file", str(prompt), "--out",
             str(answer)]
        )  # fmt: skip
        out = capsys.readouterr()
        assert rc in (OK, TRUNCATED, LOOPING)
        if rc == OK:
            ChangeProposal.model_validate_json(answer.read_text())
            assert "done:" in out.err
        else:
            assert (git_repo / "answer.json.partial").read_text().startswith('{"branch_suffix"')
        assert "prompt " in out.err  # progress went to stderr, nothing to stdout
        assert out.out == ""

        empty = git_repo / "empty.txt"
        empty.write_text("  \n")
        rc = cli_main(["generate", "--repo", str(git_repo), "--prompt-file", str(empty)])
        assert rc == ERROR and "empty" in capsys.readouterr().err
    finally:
        inst = backends._instances.pop("tiny", None)
        if inst is not None:
            inst.close()


def test_exit_codes_are_distinct() -> None:
    stats_free = [
        Truncated(message="t"),
        Looping(message="l"),
        Cancelled(message="c"),
        InvalidAnswer(message="i"),
    ]
    codes = [exit_code(e) for e in stats_free]
    assert codes == [TRUNCATED, LOOPING, CANCELLED, INVALID]
    assert len({OK, *codes, ERROR}) == 6
    renderer = ProgressRenderer(interval_s=0)
    assert renderer.update(PromptProcessed(10, 4, 0.5)) == "prompt 10 tok, 4 cached in 0.50s"
    line = renderer.update(TokensGenerated("x", 5, 12.5, 1.0))
    assert line is not None and "5 tok at 12.5 tok/s" in line


def test_prompt_evaluated_items_come_first(embedded_backend: Any) -> None:
    prompt = embedded_backend.prompt_tokens(ask(ISSUES[9]).messages)
    items = list(embedded_backend.decode(prompt, schema=None, max_tokens=8, stop_at_eog=False))
    assert isinstance(items[0], PromptEvaluated) and items[0].prompt_tokens == len(prompt)
    done = items[-1]
    assert isinstance(done, DecodeDone) and done.reason == "length"
    assert done.completion_tokens == 8 and done.forced == 0 and done.rejections == 0
