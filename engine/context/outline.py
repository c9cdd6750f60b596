"""A file's outline: its signatures and where they are, for a file too large to show whole.

Why: a context budget is spent whole files at a time, so on a real repository the model is
often shown a test of an unrelated route while the models and dependencies it must import
from are left out. An outline (aider's "repo map" idea) shows the shape of such a file — its
imports, classes with their fields, functions with their parameters, module-level names — for
a fraction of the tokens: enough to import the right names and call them correctly.

Python only, through the standard ``ast`` (``engine.core.pysource.parse``, safe on any
input): exact for the language the prompt profiles write. A file of another language, or one
that does not parse, gets no outline and is left out as before. An outline is never taken for
the file: the prompt says it is one, and the checks still treat the file as unseen.
"""

from __future__ import annotations

import ast

from engine.core import pysource

MAX_LINE = 160
"""An outline line longer than this is cut (a signature with a huge default)."""


def python_outline(text: str) -> str | None:
    """The outline of a Python module, one stub-like line per entry with its line number, or
    None when the text does not parse (or holds nothing to outline)."""
    try:
        tree = pysource.parse(text)
    except (SyntaxError, ValueError):
        return None
    lines: list[str] = []
    _outline_body(tree.body, 0, lines)
    return "\n".join(lines) + "\n" if lines else None


def _outline_body(body: list[ast.stmt], depth: int, out: list[str]) -> None:
    indent = "    " * depth
    for node in body:
        entry = _entry(node, depth)
        if entry is None:
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                out.append(_line(f"{indent}@{ast.unparse(decorator)}", decorator.lineno))
        out.append(_line(f"{indent}{entry}", node.lineno))
        if isinstance(node, ast.ClassDef):
            _outline_body(node.body, depth + 1, out)


def _line(text: str, lineno: int) -> str:
    """One outline line: stub-like Python, its line in the file as a trailing comment."""
    if len(text) > MAX_LINE:
        text = text[: MAX_LINE - 3] + "..."
    return f"{text}  # line {lineno}"


def _entry(node: ast.stmt, depth: int) -> str | None:
    """The outline line of one statement (a stub: ``def f(a) -> int: ...``), or None for
    what an outline leaves out (bodies, control flow, expressions, nested imports)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
        return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}: ..."
    if isinstance(node, ast.ClassDef):
        bases = [ast.unparse(b) for b in [*node.bases, *node.keywords]]
        return f"class {node.name}" + (f"({', '.join(bases)})" if bases else "") + ":"
    if depth == 0 and isinstance(node, ast.Import | ast.ImportFrom):
        return ast.unparse(node)
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        value = f" = {ast.unparse(node.value)}" if node.value is not None else ""
        return f"{node.target.id}: {ast.unparse(node.annotation)}{value}"
    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
        names = " = ".join(t.id for t in node.targets if isinstance(t, ast.Name))
        return f"{names} = {ast.unparse(node.value)}"
    return None


__all__ = ["python_outline"]
