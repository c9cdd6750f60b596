"""Python lines that parse but are still mistakes: a no-op assignment, a second definition.

Why: the backtracker (``engine.generate.backtrack``) takes back what cannot parse, but a small
model also derails in code that parses. It writes ``self.url = self.url`` and then a class of
ever-longer names built on it; it defines ``class Health`` again below the first one. Linters
call these self-assignment (pylint W0127) and redefinition (pyflakes F811): code nobody means
to write. Each is visible in the line just finished, so the backtracker can take that line's
first wrong token back while the model is still there, instead of letting the answer build on
it.

Not every linter finding is worth a rewind. A name imported a second time (also F811) is
harmless where it stands, and taking it back measured worse: the model, kept in its import
block, invented one new name after another until the rewinds ran out (docs/benchmarks.md).

Only the *last* line of the text is judged (the earlier ones were judged as they ended), with
the earlier lines as its context. The rules read lines, not a syntax tree: the file is
unfinished when they run. Where a line cannot be read with certainty (inside a string that
spans lines, a statement continued in brackets), a rule says nothing.
"""

from __future__ import annotations

import io
import re
import tokenize

_SELF_ASSIGN = re.compile(r"^[ \t]*([A-Za-z_][\w.]*)[ \t]*=[ \t]*([A-Za-z_][\w.]*)[ \t]*(?:#.*)?$")

_DEFINITION = re.compile(r"^([ \t]*)(?:async[ \t]+)?(?:def|class)[ \t]+([A-Za-z_]\w*)")

#: Lines that continue a compound statement at its own indentation: definitions on either
#: side of one are alternatives (``if``/``else``, ``try``/``except``), not a redefinition.
_BRANCH = re.compile(r"^[ \t]*(?:else|elif|except|finally|case)\b")


def mistake(text: str) -> tuple[int, str] | None:
    """``(index, rule)`` when the last line of ``text`` is a mistake: ``index`` is the
    character in ``text`` where it starts (what to take back). ``text`` is a Python file's
    content up to the end of the line judged (a final newline is allowed)."""
    body = text[:-1] if text.endswith("\n") else text
    line_at = body.rfind("\n") + 1
    line = body[line_at:]
    if not (_SELF_ASSIGN.match(line) or _DEFINITION.match(line)):
        return None  # the common case, decided without reading the earlier lines
    if not _starts_statement(body[:line_at]):
        return None
    earlier = body[:line_at].split("\n")[:-1]
    for rule in (_self_assignment, _redefinition):
        found = rule(line, earlier)
        if found is not None:
            return line_at + found, rule.__name__.lstrip("_")
    return None


def _self_assignment(line: str, _earlier: list[str]) -> int | None:
    """``x = x``, ``self.url = self.url``: the right side's start."""
    match = _SELF_ASSIGN.match(line)
    if match is None or match[1] != match[2]:
        return None
    return match.start(2)


def _redefinition(line: str, earlier: list[str]) -> int | None:
    """A ``def`` or ``class`` whose name the same scope already defined, neither of them
    decorated (``@overload``, ``@x.setter`` redefine on purpose): the keyword's start."""
    match = _DEFINITION.match(line)
    if match is None or _decorated(earlier, len(earlier)):
        return None
    indent, name = len(match[1].expandtabs()), match[2]
    for i in range(len(earlier) - 1, -1, -1):
        before = earlier[i]
        if not before.strip() or before.lstrip().startswith(("#", "@")):
            continue
        depth = len(before) - len(before.lstrip())
        depth = len(before[:depth].expandtabs())
        if depth < indent:
            return None  # the enclosing block's header: the scope starts here
        if depth > indent:
            continue
        if _BRANCH.match(before):
            return None
        found = _DEFINITION.match(before)
        if found is not None and found[2] == name:
            return None if _decorated(earlier, i) else len(match[1])
    return None


def _decorated(lines: list[str], index: int) -> bool:
    """Whether the definition at ``lines[index]`` follows a decorator line."""
    for i in range(index - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return stripped.startswith("@")
    return False


def _starts_statement(before: str) -> bool:
    """Whether a line after ``before`` starts a statement of its own: not the text of a
    string spanning lines, not inside brackets, not after a backslash. ``tokenize`` knows
    strings and brackets; it fails at the end of text that is inside either."""
    if before.rstrip(" \t\n").endswith("\\"):
        return False
    try:
        for _token in tokenize.generate_tokens(io.StringIO(before).readline):
            pass
    except (tokenize.TokenError, SyntaxError):
        return False
    return True


__all__ = ["mistake"]
