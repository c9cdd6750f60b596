"""Backtracking (``engine.generate.backtrack``): where the answer goes wrong, and what the
decoding loop does about it.

The rules are tested on answers fed token by token (every piece a token, so each case says
exactly which token a rewind removes and bans). The loop's side (KV cache, grammar, stream)
is tested on the embedded model with a rewind forced at a fixed point, which holds on any CPU:
the kept tokens are the same run's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.core.events import Finished, GenerationFailed, TokensGenerated
from engine.flow.demo import _FILES as DEMO_FILES
from engine.generate.backtrack import Backtracker, Rewind
from engine.generate.decode import DecodeOptions
from tests.test_llama_backend import ISSUES, ask, check_final_stream

HEAD = '{"branch_suffix":"x","files":[{"path":"app/a.py","content":"'


def feed(pieces: list[str], limit: int = 64) -> tuple[Rewind | None, str, Backtracker]:
    """Feed ``pieces`` (token i is piece i, id i) until the first rewind."""
    bt = Backtracker(limit=limit)
    for i, piece in enumerate(pieces):
        bt.feed([i], [piece.encode()])
        rewind = bt.check()
        if rewind is not None:
            return rewind, bt.data.decode(), bt
    return None, bt.data.decode(), bt


def test_a_list_item_written_twice_goes_back_to_the_first_copy() -> None:
    item = "- `user` is a model with id, created_at.\\n"
    rewind, kept, bt = feed(['{"pr_body":"## Changes\\n', item, item])
    assert rewind == Rewind(keep=2, ban=2, reason="repeat")
    assert kept.endswith(item) and kept.count("is a model") == 1
    assert bt.banned() == {2}  # the token that started the second copy, at that position only


def test_a_short_unit_three_times_goes_back_to_the_first_copy() -> None:
    pieces = [HEAD, "from fastapi import APIRouter, HTTP_PUT", *[", HTTP_PUT"] * 3]
    rewind, kept, _bt = feed(pieces)
    # three copies of ', HTTP_PUT' (the first piece ends with one): back to the first
    assert rewind == Rewind(keep=2, ban=2, reason="repeat")
    assert kept.endswith("import APIRouter, HTTP_PUT")


def test_one_shape_seven_times_in_a_line_is_cut_at_the_last_copy() -> None:
    numbers = [f", HTTP_{n}" for n in range(300, 1100, 100)]
    rewind, kept, _bt = feed([HEAD, "from fastapi import APIRouter, HTTP_200", *numbers])
    # the sixth ', HTTP_<n>' in a row is taken back: five stay, and its token is banned
    assert rewind == Rewind(keep=6, ban=6, reason="repeat")
    assert kept.endswith("APIRouter, HTTP_200, HTTP_300, HTTP_400, HTTP_500, HTTP_600")


def test_an_unindented_body_goes_back_to_the_line() -> None:
    rewind, kept, _bt = feed([HEAD, "def f():\\n", "return", " 1\\n"])
    assert rewind == Rewind(keep=2, ban=2, reason="syntax")
    assert kept.endswith('"content":"def f():\\n')


def test_a_line_is_judged_before_it_ends_when_no_continuation_can_fix_it() -> None:
    rewind, kept, _bt = feed([HEAD, "from fastapi import APIRouter, HTTP_", " PUT", ","])
    assert rewind == Rewind(keep=2, ban=2, reason="syntax")
    assert kept.endswith("APIRouter, HTTP_")


@pytest.mark.parametrize(
    "line",
    ["x = a if b", "x = 1 +", "print(a", "assert r.status_code ==", "for a, b in", "@", "x = a."],
)
def test_an_unfinished_line_is_not_judged(line: str) -> None:
    pieces = [HEAD] + [line[i : i + 2] for i in range(0, len(line), 2)]
    rewind, _kept, _bt = feed(pieces)
    assert rewind is None


def test_a_python_file_closed_mid_construct_must_write_on() -> None:
    rewind, kept, _bt = feed([HEAD, "class A(B):\\n", '"', "}]}"])
    assert rewind == Rewind(keep=2, ban=2, reason="syntax")  # the closing quote's token
    assert kept.endswith("class A(B):\\n")


def test_other_files_are_not_parsed() -> None:
    head = HEAD.replace("app/a.py", "docs/notes.md")
    rewind, _kept, _bt = feed([head, "def f():\\n", "return 1\\n", '"', "}]}"])
    assert rewind is None


def test_a_file_copied_under_another_path_goes_back_to_the_choice_of_another_file() -> None:
    body = '\\"\\"\\"Health endpoints.\\"\\"\\"\\n\\nfrom fastapi import APIRouter\\n'
    first = f'{{"path":"app/a.py","content":"{body}"}}'
    pieces = [
        '{"branch_suffix":"x","files":[',
        first,
        ",",
        '{"path":"',
        "app/b.py",
        '","content":"',
    ]
    rewind, kept, _bt = feed([*pieces, body, '"', "}"])
    assert rewind == Rewind(keep=2, ban=2, reason="repeat")  # the ',' that opened app/b.py
    assert kept.endswith('APIRouter\\n"}')
    # two short files alike (empty modules, one import) are not copies
    short = ['{"files":[{"path":"a/__init__.py","content":""},', '{"path":"b/__init__.py"']
    rewind, _kept, _bt = feed([*short, ',"content":"', '"', "}"])
    assert rewind is None


def test_the_limit_bounds_the_rewinds() -> None:
    rewind, _kept, bt = feed([HEAD, "def f():\\n", "return", " 1\\n"], limit=0)
    assert rewind is None and bt.rewinds == 0


def _fastapi_files() -> dict[str, str]:
    """The Python files a model is asked to write: the demo repository's and the worked
    example's (the Backend Dev profile's complete answer)."""
    files = {p: t for p, t in DEMO_FILES.items() if p.endswith(".py") and t.strip()}
    text = (Path(__file__).resolve().parents[1] / "prompts" / "backend-dev.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    for example in front["examples"]:
        for path, content in example["files"].items():
            if path.endswith(".py"):
                files[f"example/{path}"] = content
        for entry in example["answer"]["files"]:
            files[f"example-answer/{entry['path']}"] = entry["content"]
    return files


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_fastapi_files_are_never_taken_back(chunk: int) -> None:
    files = _fastapi_files()
    assert len(files) >= 8
    for path, content in files.items():
        answer = HEAD.replace("app/a.py", path) + json.dumps(content)[1:] + "}]}"
        raw = answer.encode()
        pieces = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
        bt = Backtracker()
        for i, piece in enumerate(pieces):
            bt.feed([i], [piece])
            assert bt.check() is None, (path, bt.data[-80:])


# ------------------------------------------------------------------------------------------
# The loop: KV cache, grammar and stream taken back together


class _RewindOnce(Backtracker):
    """Takes the answer back once, when it reaches ``AT`` tokens, to ``KEEP`` tokens."""

    AT = 40
    KEEP = 30
    fired: Rewind | None = None

    def check(self) -> Rewind | None:
        if _RewindOnce.fired is None and len(self.tokens) >= self.AT:
            _RewindOnce.fired = self._rewind_at(self.starts[self.KEEP], "test")
            return _RewindOnce.fired
        return None


def test_a_rewind_keeps_the_run_s_own_prefix_and_bans_the_token(
    embedded_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ask(ISSUES[3])
    plain = list(embedded_backend.generate(request, options=DecodeOptions(backtrack=0)))
    plain_tokens = list(embedded_backend.last_tokens)
    assert len(plain_tokens) > _RewindOnce.AT, "the answer must be long enough to rewind"

    monkeypatch.setattr("engine.generate.decode.Backtracker", _RewindOnce)
    _RewindOnce.fired = None
    events = list(embedded_backend.generate(request, options=DecodeOptions(backtrack=8)))
    final = check_final_stream(events)
    fired = _RewindOnce.fired
    assert fired is not None
    tokens = list(embedded_backend.last_tokens)
    # the kept tokens are the plain run's own; the banned token is not taken there again
    assert tokens[: fired.keep] == plain_tokens[: fired.keep]
    assert tokens[fired.keep] != fired.ban
    # the streamed text, rewinds applied, is the answer; the stats count the rewind
    parts: list[str] = []
    rewinds = [e for e in events if isinstance(e, TokensGenerated) and e.rewind]
    for event in events:
        if isinstance(event, TokensGenerated):
            event.add_to(parts)
    assert len(rewinds) == 1 and rewinds[0].rewind > 0
    assert isinstance(final, Finished | GenerationFailed)
    assert "".join(parts) == final.raw
    assert final.stats.rewinds == 1
    assert final.stats.completion_tokens == len(tokens)
    if isinstance(final, Finished):  # the grammar followed the rewind: still a valid answer
        assert json.loads(final.raw)["files"]
    assert plain[-1].raw != final.raw or tokens != plain_tokens  # type: ignore[attr-defined]


def test_backtrack_is_a_profile_setting_validated_in_config() -> None:
    from pydantic import ValidationError

    from engine.core.config import LlamaCppProfile

    profile = LlamaCppProfile(backend="llama_cpp", model_path="m.gguf")
    assert profile.backtrack == 64
    assert LlamaCppProfile(backend="llama_cpp", model_path="m.gguf", backtrack=0).backtrack == 0
    with pytest.raises(ValidationError):
        LlamaCppProfile(backend="llama_cpp", model_path="m.gguf", backtrack=-1)
