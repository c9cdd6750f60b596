"""The per-issue grammar in the in-process engine: what it forbids cannot come out.

A generation for issue N runs under a schema that ends ``pr_body`` with ``Closes #N`` and
holds ``commit_message`` and ``pr_title`` to conventional subjects; the decoding loop refuses
the token that would close a path equal (ignoring case) to one already written. Greedy and
sampled runs over many prompts on the real model: whatever each answer says, none breaks
those rules (the text itself differs between CPUs and is never asserted).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.events import Finished, InvalidAnswer, Looping, Truncated
from engine.core.models import (
    CONVENTIONAL_PATTERN,
    ChangeProposal,
    issue_rule_errors,
    proposal_json_schema,
)
from engine.generate.backends.base import GenerationRequest
from engine.generate.decode import DecodeOptions, PathGuard, TokensDecoded
from engine.generate.sampling import SamplingParams
from engine.generate.stream import ProposalStream

#: an example that writes one path three times (twice in another case): what to imitate
DUPLICATING_SYSTEM = (
    "Answer with one JSON object. Example: "
    '{"branch_suffix":"x","commit_message":"feat: x","pr_title":"feat: x",'
    '"pr_body":"Adds x.\\n\\nCloses #9","files":[{"path":"app/a.py","content":"x\\n"},'
    '{"path":"app/a.py","content":"y\\n"},{"path":"APP/A.py","content":"z\\n"}]}'
)

PROMPTS = [
    "Issue #{n}: write app/a.py three times.",
    "Issue #{n}: add a /health endpoint in app/a.py and app/a.py.",
    "Issue #{n}: fix the typo in app/utils.py.",
    "Issue #{n}: add tests/test_a.py for app/a.py.",
    "Issue #{n}: create README.md, readme.md and Readme.md.",
    "Issue #{n}: Closes #3. Fixes #4. Write app/b.py.",
]


def paths_of(raw: str) -> list[str]:
    """The complete path strings of a (partial) answer, in order."""
    return re.findall(r'"path":"([^"]*)"', raw)


def check_answer(final: Any, number: int) -> None:
    """The per-issue rules, on a finished answer and on what a partial one already wrote."""
    assert not isinstance(final, InvalidAnswer), final
    assert isinstance(final, Finished | Truncated | Looping), final
    paths = [p.lower() for p in paths_of(final.raw)]
    assert len(paths) == len(set(paths)), paths
    if isinstance(final, Finished):
        proposal = ChangeProposal.model_validate(json.loads(final.raw))
        assert issue_rule_errors(proposal, number) == ()
        assert proposal.pr_body.rstrip(".\n").endswith(f"Closes #{number}")
        assert re.fullmatch(CONVENTIONAL_PATTERN, proposal.commit_message)
        assert re.fullmatch(CONVENTIONAL_PATTERN, proposal.pr_title)
    else:
        body = (final.partial or {}).get("pr_body")
        if isinstance(body, str) and '"pr_body":"' in final.raw and '","files"' in final.raw:
            assert body.rstrip(".\n").endswith(f"Closes #{number}"), body


@pytest.mark.model
@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_no_answer_lacks_closes_or_repeats_a_path(embedded_backend: Any, mode: str) -> None:
    finished = 0
    for i, prompt in enumerate(PROMPTS):
        number = 100 + i
        sampling = (
            SamplingParams(temperature=0.0)
            if mode == "greedy"
            else SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=11 + i)
        )
        request = GenerationRequest(
            messages=[
                {"role": "system", "content": DUPLICATING_SYSTEM},
                {"role": "user", "content": prompt.format(n=number)},
            ],
            max_tokens=120,
            issue_number=number,
        )
        final = list(embedded_backend.generate(request, sampling=sampling))[-1]
        check_answer(final, number)
        finished += isinstance(final, Finished)
    assert finished >= 1, "at least one short answer completes"


@pytest.mark.model
def test_the_same_loop_without_the_guard_writes_duplicates_or_not_but_never_with_it(
    embedded_backend: Any,
) -> None:
    """``unique_paths=False`` is the loop before the guard: the guard only removes tokens."""
    request = GenerationRequest(
        messages=[
            {"role": "system", "content": DUPLICATING_SYSTEM},
            {"role": "user", "content": "Issue #8: write app/a.py three times."},
        ],
        max_tokens=100,
        issue_number=8,
    )
    prompt = embedded_backend.prompt_tokens(request.messages)
    texts = {}
    for guard in (False, True):
        data = b""
        for item in embedded_backend.decode(
            prompt,
            schema=request.schema,
            sampling=SamplingParams(temperature=0.0),
            max_tokens=100,
            options=DecodeOptions(unique_paths=guard),
        ):
            if isinstance(item, TokensDecoded):
                data += item.data
        texts[guard] = data.decode("utf-8", "replace")
    guarded = [p.lower() for p in paths_of(texts[True])]
    assert len(guarded) == len(set(guarded))
    unguarded = [p.lower() for p in paths_of(texts[False])]
    if len(unguarded) == len(set(unguarded)):  # no duplicate to refuse: the same answer
        assert texts[True] == texts[False]


def test_path_guard_tracks_paths_across_token_boundaries() -> None:
    guard = PathGuard()
    for piece in [b'{"files":[{"', b'path":"', b"app/", b"a.py", b'","content":"x"},{"path":"']:
        guard.feed(piece)
    assert guard.paths == {"app/a.py"}
    assert guard.closes_duplicate(b'app/a.py"')
    assert guard.closes_duplicate(b'APP/A.PY",')  # case-insensitively
    assert not guard.closes_duplicate(b"app/a.py")  # not closed yet
    guard.feed(b"app/")
    assert guard.closes_duplicate(b'A.py"')
    assert not guard.closes_duplicate(b'b.py"')
    assert not guard.closes_duplicate(b'a.pyc"')
    # a quote escaped inside content is never a key
    other = PathGuard()
    other.feed(b'{"content":"\\"path\\":\\"x\\"","path":"y"')
    assert other.paths == {"y"}


def test_path_guard_refuses_a_path_that_is_another_one_s_file_or_directory() -> None:
    guard = PathGuard()
    for piece in [b'{"files":[{"path":"', b"app/x.py", b'","content":"x"},{"path":"']:
        guard.feed(piece)
    # a '/' after a file written before: 'app/x.py' cannot also be a directory
    assert guard.closes_duplicate(b"app/x.py/")
    guard.feed(b"app/x")
    assert guard.closes_duplicate(b".py/test.py")
    assert not guard.closes_duplicate(b"_test.py")
    # closing a path that is the directory of one written before
    other = PathGuard()
    for piece in [b'{"files":[{"path":"', b"app/api/x.py", b'","content":"x"},{"path":"']:
        other.feed(piece)
    assert other.closes_duplicate(b'app/api"')
    assert not other.closes_duplicate(b'app/api.py"')


def test_a_server_that_ignores_the_per_issue_schema_gives_an_invalid_answer() -> None:
    """The final validation checks the same rules as the grammar (every backend's stream)."""
    answer = {
        "branch_suffix": "x",
        "commit_message": "feat: x",
        "pr_title": "feat: x",
        "pr_body": "Adds x.",
        "files": [{"path": "a.py", "content": ""}],
    }
    stream = ProposalStream(issue_number=3)
    stream.feed(json.dumps(answer))
    final = stream.finish("stop", stream.stats)
    assert isinstance(final, InvalidAnswer)
    assert "Closes #3" in final.message
    fixed = ProposalStream(issue_number=3)
    fixed.feed(json.dumps({**answer, "pr_body": "Adds x.\n\nCloses #3"}))
    assert isinstance(fixed.finish("stop", fixed.stats), Finished)
    generic = ProposalStream()  # a prompt file, no issue: the generic schema
    generic.feed(json.dumps(answer))
    assert isinstance(generic.finish("stop", generic.stats), Finished)


def test_every_backend_request_carries_the_issue_schema() -> None:
    request = GenerationRequest(messages=[], issue_number=5)
    assert request.schema == proposal_json_schema(issue_number=5)
    assert request.schema["properties"]["pr_body"]["pattern"].endswith("Closes #5[.]?\\n?$")
    assert "pattern" not in GenerationRequest(messages=[]).schema["properties"]["pr_body"]


def test_openai_body_sends_the_issue_schema_the_retry_sampling_and_dry() -> None:
    from engine.core.config import OpenAIProfile
    from engine.generate.backends.openai_compat import OpenAICompatBackend

    profile = OpenAIProfile(
        backend="openai", base_url="http://127.0.0.1:9/v1", model="m", dry_multiplier=0.8
    )
    backend = OpenAICompatBackend("srv", profile)
    request = GenerationRequest(messages=[], issue_number=5, temperature=0.3, seed=42)
    body = backend._body(request, 100, "json_schema")
    assert body["response_format"]["json_schema"]["schema"] == proposal_json_schema(issue_number=5)
    assert (body["temperature"], body["seed"]) == (0.3, 42)
    assert body["dry_multiplier"] == 0.8 and body["dry_sequence_breakers"] == ["\n", ":", '"', "*"]
    plain = OpenAICompatBackend("srv", profile.model_copy(update={"dry_multiplier": 0.0}))
    assert "dry_multiplier" not in plain._body(GenerationRequest(messages=[]), 100, "json_schema")


def test_ollama_options_carry_the_retry_sampling() -> None:
    from engine.core.config import OllamaProfile
    from engine.generate.backends.ollama import OllamaBackend

    backend = OllamaBackend("o", OllamaProfile(backend="ollama", model="m", seed=3))
    options = backend.options(100, GenerationRequest(messages=[], temperature=0.3, seed=9))
    assert (options["temperature"], options["seed"]) == (0.3, 9)
    assert backend.options(100)["seed"] == 3


@given(
    prefix=st.text(alphabet=st.sampled_from(list("ab _-#\n.:`()é1")), max_size=40),
    number=st.integers(min_value=1, max_value=999),
    tail=st.sampled_from(["", ".", "\n", ".\n"]),
)
def test_every_body_the_grammar_allows_passes_the_closes_checks(
    prefix: str, number: int, tail: str
) -> None:
    """The pattern is never looser than the checks that judge the PR body afterwards."""
    from engine.core.models import pr_body_pattern
    from engine.review.checks.conventions import _CLOSING_KEYWORD_RE
    from engine.review.checks.conventions import closes_issue as _closes

    body = f"{prefix}Closes #{number}{tail}"
    if re.fullmatch(pr_body_pattern(number), body):
        assert _closes(body, number)
        assert {int(n) for n in _CLOSING_KEYWORD_RE.findall(body)} == {number}
