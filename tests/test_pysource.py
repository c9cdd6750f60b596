"""Parsing untrusted Python: deep nesting is refused before it recurses, parses never race."""

from __future__ import annotations

import ast
import gc
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import pysource
from engine.core.models import ChangeProposal
from engine.review.checks.orchestrator import run_checks

#: Each of these nests ~5,000 levels: over the ~3,000 where CPython 3.11's ``ast.parse`` raises
#: RecursionError while building the tree.
DEEP = {
    "attribute chain": "x = a" + ".b" * 5000 + "\n",
    "binary chain": "x = 1" + " + 1" * 5000 + "\n",
    "unary chain": "x = " + "-" * 5000 + "1\n",
    "call chain": "f" + "()" * 5000 + "\n",
    "conditional chain": "x = " + "1 if a else " * 5000 + "2\n",
    "elif chain": "if a:\n    pass\n" + "elif a:\n    pass\n" * 5000,
    "not chain": "x = " + "not " * 5000 + "a\n",
    "f-string": 'x = f"{' + "1+" * 5000 + '1}"\n',
}


def tree_depth(node: ast.AST) -> int:
    """The depth of a syntax tree, counted without recursion."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(current))
    return deepest


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_nesting_is_refused_before_ast_recurses(name: str) -> None:
    with pytest.raises(SyntaxError, match="nested too deeply to analyse"):
        pysource.parse(DEEP[name], "deep.py")
    assert pysource.parse("x = 1\n").body  # the process parses normally afterwards


@pytest.mark.parametrize("name", sorted(DEEP))
def test_the_deep_inputs_really_break_a_plain_parse(name: str) -> None:
    """The fixture is honest: unguarded, CPython refuses every one of them one way or another."""
    with pytest.raises((RecursionError, MemoryError, SyntaxError)):
        ast.parse(DEEP[name])


def test_code_of_ordinary_depth_parses_with_a_bound_above_its_real_depth() -> None:
    for module in (ast, threading, pytest):
        text = Path(str(module.__file__)).read_text(encoding="utf-8")
        tree = pysource.parse(text)
        assert pysource.depth_bound(text) >= tree_depth(tree)


_atom = st.sampled_from(["a", "0.5", "'s'", "b.c", "f()"])


def _nest(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid Python expressions around ``inner``: operators, calls, displays, comma lists."""
    two = st.tuples(inner, inner)
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "*", "-", "|", "<<", "<"]), inner).map(" ".join),
        inner.map(lambda e: f"-{e}"),
        inner.map(lambda e: f"(not {e})"),
        inner.map(lambda e: f"[{e}]"),
        inner.map(lambda e: f"{e}.attr"),
        inner.map(lambda e: f"g({e})"),
        inner.map(lambda e: f"{e}[0:1]"),
        two.map(lambda p: f"g({p[0]}, k={p[1]})"),
        two.map(lambda p: f"[{p[0]}, {p[1]}]"),
        two.map(lambda p: f"{{{p[0]}: {p[1]}, 'z': 1}}"),
        inner.map(lambda e: f"(lambda a, b=1: {e})"),
        two.map(lambda p: f"[{p[0]} for a, b in {p[1]}]"),
        two.map(lambda p: f"({p[0]} if c else {p[1]})"),
        two.map(lambda p: f"{p[0]}[{p[1]}, 2]"),
    )


@settings(max_examples=150, deadline=None)
@given(st.recursive(_atom, _nest, max_leaves=25), st.integers(0, 6))
def test_the_depth_bound_is_never_below_the_real_depth(expr: str, indent: int) -> None:
    lines = [f"{'    ' * level}if a{level}:" for level in range(indent)]
    text = "\n".join([*lines, f"{'    ' * indent}x = {expr}", ""])
    assert pysource.depth_bound(text) >= tree_depth(ast.parse(text))


def test_a_proposal_file_nested_too_deeply_is_a_finding_not_a_crash(git_repo: Path) -> None:
    proposal = ChangeProposal.model_validate(
        {
            "branch_suffix": "deep",
            "commit_message": "feat: deep",
            "pr_title": "Deep",
            "pr_body": "Closes #1",
            "files": [{"path": "app/deep.py", "content": DEEP["attribute chain"]}],
        }
    )
    findings = run_checks(proposal, git_repo, issue_number=1)
    messages = [f.message for f in findings if f.code == "python-syntax-error"]
    assert messages and "nested too deeply" in messages[0]


class _Finaliser:
    """Cyclic garbage whose finaliser runs Python code: a collection during a parse then lets
    another thread run, which is what exposes 3.11's shared AST depth counter."""

    def __del__(self) -> None:
        sum(range(100))


def test_parses_in_several_threads_never_fail_with_a_depth_mismatch() -> None:
    text = Path(ast.__file__).read_text(encoding="utf-8") * 2
    failures: list[BaseException] = []
    stop = time.monotonic() + 3.0
    threshold = gc.get_threshold()

    def work() -> None:
        while time.monotonic() < stop:
            for _ in range(30):
                a, b = _Finaliser(), _Finaliser()
                a.other, b.other = b, a  # type: ignore[attr-defined]
            try:
                pysource.parse(text)
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                failures.append(exc)

    gc.set_threshold(50)
    try:
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.set_threshold(*threshold)
    assert not failures, failures[:3]
