"""Lines that parse but are mistakes (``engine.generate.pylines``), and the backtracker's use
of them: what is taken back, where, and what real code never sets off."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.flow.demo import _FILES as DEMO_FILES
from engine.generate.backtrack import Rewind
from engine.generate.pylines import mistake
from tests.test_backtrack import HEAD, feed

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "rule", "at"),
    [
        ("x = 1\nx = x\n", "self_assignment", "x\n"),
        (
            "class A:\n    def f(self):\n        self.url = self.url\n",
            "self_assignment",
            "self.url\n",
        ),
        ("a = (\n    b\n)\nb = b  # no-op\n", "self_assignment", "b  # no-op\n"),
        ("class H:\n    pass\n\n\nclass H(Base):\n", "redefinition", "class H(Base):\n"),
        ("def f():\n    pass\n\nasync def f():\n", "redefinition", "async def f():\n"),
        (
            "class A:\n    def f(self): ...\n    x = 1\n    def f(self): ...\n",
            "redefinition",
            "def f(self): ...\n",
        ),
    ],
)
def test_each_rule_points_at_where_the_line_goes_wrong(text: str, rule: str, at: str) -> None:
    found = mistake(text)
    assert found is not None and found[1] == rule
    assert text[found[0] :] == at


@pytest.mark.parametrize(
    "text",
    [
        "a = f(\n    b = b\n",  # a keyword argument inside brackets, not a statement
        'doc = """\nx = x\n',  # the text of a string spanning lines
        "x = \\\n    x\n",
        "class A:\n    def f(self): ...\n\n\nclass B:\n    def f(self): ...\n",  # two scopes
        "if fast:\n    def f(): ...\nelse:\n    def f(): ...\n",  # alternatives
        "try:\n    import json\nexcept ImportError:\n    import simplejson as json\n",
        "class A:\n    @property\n    def x(self): ...\n\n    @x.setter\n    def x(self, v): ...\n",
        "@overload\ndef f(a: int) -> int: ...\n@overload\ndef f(a: str) -> str: ...\n"
        "def f(a): ...\n",
        "import os\nimport os.path\n",  # binds os twice, as Python means it to
        "from collections.abc import Iterator\nfrom collections.abc import Set as AbstractSet\n",
        "from hypothesis import given\nfrom hypothesis import strategies as st\n",
        "x = x + 1\n",
        "self.a = self.b\n",
        "from a import b\nfrom a.c import d\n",
        "from fastapi import APIRouter\nfrom fastapi import Depends\n",  # a style, not a mistake
        # a name imported again is harmless where it stands (rewinding it measured worse)
        "from fastapi import APIRouter, Depends\nfrom fastapi import Api, Depends\n",
    ],
)
def test_code_that_means_it_is_not_a_mistake(text: str) -> None:
    assert mistake(text) is None


def _prefixes(source: str) -> list[str]:
    lines = source.split("\n")
    return ["\n".join(lines[: i + 1]) + "\n" for i in range(len(lines) - 1)]


def test_real_code_sets_off_no_rule_at_any_line() -> None:
    """The demo repository and a sample of this project's own modules (isort-ordered, with
    decorators, overloads, aliases, nested classes, strings spanning lines), judged line by
    line as the backtracker judges an answer."""
    sources = [text for path, text in DEMO_FILES.items() if path.endswith(".py")]
    for rel in (
        "engine/generate/pylines.py",
        "engine/generate/backtrack.py",
        "engine/core/config.py",
        "tui/app.py",
        "tests/test_backtrack.py",
    ):
        sources.append((ROOT / rel).read_text(encoding="utf-8"))
    for source in sources:
        for prefix in _prefixes(source):
            assert mistake(prefix) is None, prefix[-200:]


def test_the_backtracker_takes_a_self_assignment_back_to_its_right_side() -> None:
    pieces = [HEAD, "class A:\\n    def f(self):\\n        self.url = ", "self", ".url", "\\n"]
    rewind, kept, _bt = feed(pieces)
    assert rewind == Rewind(keep=2, ban=2, reason="mistake")
    assert kept.endswith("self.url = ")


def test_a_second_class_of_one_name_is_taken_back_but_not_in_another_file() -> None:
    body = "class H:\\n    pass\\n\\n\\n"
    rewind, _kept, _bt = feed([HEAD, body, "class", " H:", "\\n"])
    assert rewind == Rewind(keep=2, ban=2, reason="mistake")
    other = '","path":"app/b.py","content":"'  # a new file: its own scope
    rewind, _kept, _bt = feed([HEAD, body, other, "class", " H:", "\\n"])
    assert rewind is None


def test_text_files_are_not_judged() -> None:
    head = '{"files":[{"path":"notes.md","content":"'
    rewind, _kept, _bt = feed([head, "x = 1\\n", "x = x", "\\n"])
    assert rewind is None
