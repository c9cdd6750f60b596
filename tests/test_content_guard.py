"""The decoding loop refuses to end a file where it does not parse.

``ContentGuard`` follows the compact JSON of an answer byte by byte, as the loop writes it,
and says whether a candidate token would close the current ``content`` string of a ``.py``,
``.json`` or ``.toml`` file that does not parse. Token boundaries fall anywhere, escapes
included; text that only looks like a key inside a string is not one.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.generate.decode import ContentGuard, parses

HEAD = (
    '{"branch_suffix":"x","commit_message":"feat: x","pr_title":"feat: x","pr_body":"b","files":['
)


def opened(path: str, content: str) -> tuple[ContentGuard, bytes]:
    """A guard fed up to the open content string of ``path`` holding ``content``."""
    guard = ContentGuard()
    start = HEAD + '{"path":' + json.dumps(path) + ',"content":' + json.dumps(content)[:-1]
    guard.feed(start.encode())
    return guard, b'"}]}'


@pytest.mark.parametrize(
    ("path", "content", "refused"),
    [
        ("app/a.py", "class Product(BaseModel):\n    ", True),
        ("app/a.py", "class Product(BaseModel):\n    name: str\n", False),
        ("app/a.py", 'x = "unterminated\n', True),
        ("app/a.py", "", False),
        ("data/a.json", '{"a": [1, 2', True),
        ("data/a.json", '{"a": [1, 2]}', False),
        ("pyproject.toml", "[project\nname = 1", True),
        ("pyproject.toml", "[project]\nname = 'x'\n", False),
        ("README.md", "# unbalanced ( [ {", False),  # not a kind the loop parses
    ],
)
def test_a_file_that_does_not_parse_cannot_be_closed(
    path: str, content: str, refused: bool
) -> None:
    guard, close = opened(path, content)
    assert guard.closes_unparseable(close) is refused
    assert guard.closes_unparseable(b"x") is False  # no quote: nothing closes


def test_an_escaped_quote_does_not_close_and_the_refusals_are_bounded() -> None:
    guard, close = opened("a.py", "s = ")
    assert guard.closes_unparseable(b'\\"') is False  # an escaped quote inside the text
    guard.feed(b'\\"abc')
    assert guard.closes_unparseable(close)  # s = "abc has no closing quote: refused
    for _ in range(ContentGuard.MAX_REFUSALS):
        guard.count_refusal()
    assert not guard.closes_unparseable(close)  # the budget is spent: the checks report it
    guard.feed(close)
    assert guard.blocked == ContentGuard.MAX_REFUSALS


def test_each_file_is_judged_by_its_own_path_and_gets_its_own_budget() -> None:
    guard, close = opened("a.py", "x = 1\n")
    guard.count_refusal()
    guard.feed(b'"},{"path":"notes.txt","content":"def (')
    assert not guard.closes_unparseable(b'"')  # a text file: any content ends
    guard.feed(b'"},{"path":"b.py","content":"def (')
    assert guard.closes_unparseable(b'"}]}')


def test_text_that_looks_like_a_key_inside_a_string_is_not_one() -> None:
    guard = ContentGuard()
    body = json.dumps('"path":"x.py","content":"def (')  # escaped inside the PR body
    guard.feed((HEAD.replace('"b"', body)).encode())
    assert not guard.closes_unparseable(b'"')


@given(
    content=st.text(alphabet=st.sampled_from(list('ab():=\n "\\\t1é')), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_the_verdict_does_not_depend_on_where_tokens_split_the_bytes(
    content: str, cuts: list[int]
) -> None:
    whole = (HEAD + '{"path":"a.py","content":' + json.dumps(content)[:-1]).encode()
    guard = ContentGuard()
    last = 0
    for cut in sorted(set(c for c in cuts if c < len(whole))):
        guard.feed(whole[last:cut])
        last = cut
    guard.feed(whole[last:])
    assert guard.closes_unparseable(b'"}') is (not parses("a.py", content))


def test_the_profile_setting_turns_the_guard_on_and_is_validated() -> None:
    from pydantic import ValidationError

    from engine.core.config import LlamaCppProfile
    from engine.generate.decode import DecodeOptions

    assert DecodeOptions().parseable_files is False  # measured worse on the embedded model
    on = LlamaCppProfile(backend="llama_cpp", model_path="m.gguf", parseable_files=True)
    assert on.parseable_files is True
    with pytest.raises(ValidationError):
        LlamaCppProfile(backend="llama_cpp", model_path="m.gguf", parseable_files="sometimes")
