"""Parse untrusted Python source (a proposal's files) without harming the process.

Two CPython 3.11 hazards sit behind a plain ``ast.parse`` on model output:

* **Deep nesting.** Turning the C parser's tree into Python ``ast`` objects recurses once per
  level; about 3,000 levels (``a.b.b.b…``, ``1+1+1…``, ``- - -1``, long ``elif`` chains) raise
  ``RecursionError`` from inside ``ast.parse``. A model that loops writes exactly such input.
* **A shared depth counter.** 3.11 keeps that recursion counter in per-interpreter state
  (python/cpython#106905). When two threads parse at once and one is switched out mid-way (a
  garbage collection running a finalizer is enough), the other resets the counter and the first
  fails with ``SystemError: AST constructor recursion depth mismatch`` — a process-wide hazard,
  since pytest, the TUI's workers and a batch's checks all parse in threads.

So :func:`parse` first bounds the tree's depth with a cheap token count (a statement cannot nest
deeper than it has operators, brackets and keywords) and refuses anything past
:data:`MAX_DEPTH` with a ``SyntaxError`` that says why, and it runs the engine's own parses one
at a time under a lock.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import threading
import tokenize

#: The deepest statement :func:`parse` hands to ``ast.parse``: a third of the ~3,000 levels
#: where CPython 3.11 gives up, so a parse started deep in a thread's stack is still safe.
MAX_DEPTH = 1000

PYTHON_EXT = (".py", ".pyi")
"""The file names the engine treats as Python source (checks, backtracking, outlines)."""


def is_python_path(path: str) -> bool:
    """Whether ``path`` names a Python source file (by its extension, any case)."""
    return path.lower().endswith(PYTHON_EXT)


#: Levels outside any statement: the module, the statement itself and slack for a node that
#: no token announces (an unparenthesised tuple, a keyword argument's own node).
_FIXED_LEVELS = 8
#: Per indented block (a compound statement and its body); per bracket (the bracket's node and
#: an unparenthesised tuple inside it).
_LEVELS_PER_BLOCK = 2
_LEVELS_PER_BRACKET = 2

_LOCK = threading.Lock()

_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")
#: Keywords after which a comma does not end the expression being nested (``lambda a, b: …``,
#: ``for a, b in …``), with the token that ends that state.
_PENDING_UNTIL = {"lambda": ":", "for": "in"}

#: Characters that can each open one level of an expression (operators, calls, subscripts,
#: attribute access, displays). Used as a whole-file bound when the text does not tokenize.
_DEEPENING_CHAR = re.compile(r"[-+*/%@&|^~<>.(\[{=!:]")


def depth_bound(text: str) -> int:
    """An upper bound on the depth of ``text``'s syntax tree, without building it.

    Every level of an expression is announced by a token that is not a plain name, number or
    string: an operator, a bracket, ``.``, ``=``, ``:`` or a keyword (``not``, ``if``,
    ``lambda``, ``await``…). Comma-separated items are siblings, so a comma ends the count of
    its bracket's current item (except inside ``lambda`` parameters and ``for`` targets). The
    bound is the deepest point of (per open bracket: its item's count and two levels) plus the
    statement's blocks and ``elif`` chains (each ``elif`` nests the next branch one level
    deeper). f-strings, one token in 3.11 whose inner expressions are parsed too, count their
    length. Big flat literals (a dict of 5,000 entries) stay shallow, as they are.

    Args:
        text: Python source.

    Returns:
        The bound (a count of operator characters when the text does not tokenize).
    """
    worst = 0
    counts = [0]  # per open bracket (and the statement): tokens in the current item
    pending: list[str | None] = [None]
    elif_chain: dict[int, int] = {}  # indentation level -> consecutive elif branches
    level = 0
    line_start = True
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind, string = tok.type, tok.string
            if kind == tokenize.INDENT:
                level += 1
                continue
            if kind == tokenize.DEDENT:
                level -= 1
                continue
            if kind in (tokenize.NEWLINE, tokenize.ENDMARKER):
                counts, pending, line_start = [0], [None], True
                continue
            if kind in (tokenize.NL, tokenize.COMMENT):
                continue
            if line_start:
                line_start = False
                if string == "elif":
                    elif_chain[level] = elif_chain.get(level, 0) + 1
                elif string != "else":
                    for deeper in [lv for lv in elif_chain if lv >= level]:
                        del elif_chain[deeper]
            if kind == tokenize.OP and string in _CLOSERS:
                if len(counts) > 1:
                    counts.pop()
                    pending.pop()
                continue
            if kind == tokenize.OP and string in (",", ";"):
                if pending[-1] is None:
                    counts[-1] = 0
                continue
            if kind == tokenize.OP or (kind == tokenize.NAME and keyword.iskeyword(string)):
                counts[-1] += 1
                if string == pending[-1]:
                    pending[-1] = None
                elif string in _PENDING_UNTIL:
                    pending[-1] = _PENDING_UNTIL[string]
                if string in _OPENERS:
                    counts.append(0)
                    pending.append(None)
            elif kind == tokenize.STRING and string[:3].lower().lstrip("rb").startswith("f"):
                counts[-1] += len(string)
            else:
                continue
            here = (
                sum(counts)
                + _LEVELS_PER_BRACKET * (len(counts) - 1)
                + _LEVELS_PER_BLOCK * level
                + sum(elif_chain.values())
            )
            worst = max(worst, here)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # Not tokenizable: ast.parse will refuse it too, but only after building what it can.
        return len(_DEEPENING_CHAR.findall(text)) + _FIXED_LEVELS
    return worst + _FIXED_LEVELS


def parse(text: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` for untrusted source: bounded depth, one parse at a time.

    Args:
        text: Python source.
        filename: the name shown in errors.

    Returns:
        The module's syntax tree.

    Raises:
        SyntaxError: the source does not parse, or nests deeper than :data:`MAX_DEPTH` levels
            (then ``msg`` says so and ``lineno`` is None).
        ValueError: the source contains a NUL byte.
    """
    bound = depth_bound(text)
    if bound > MAX_DEPTH:
        raise SyntaxError(
            f"nested too deeply to analyse (up to {bound} levels; the limit is {MAX_DEPTH})",
            (filename, None, None, None),
        )
    with _LOCK:
        try:
            return ast.parse(text, filename=filename)
        except (RecursionError, MemoryError) as exc:  # the bound makes these unreachable
            raise SyntaxError(f"too complex to analyse ({type(exc).__name__})") from None
