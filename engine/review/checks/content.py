"""Content rules: is each proposed file complete text (placeholders, truncation, syntax, newline)?

Why: small local models write lazy placeholders ("# rest of file unchanged") and run out of
tokens mid-file; a whole-file answer like that silently deletes what it stands for. These
rules read one file's new content on its own; rules that compare it with the base version
are in ``rewrites``, rules about what a path means to tools are in ``sensitive``.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib

import yaml

from engine.core import pysource
from engine.review.checks.registry import Finding, ProposedFile, extension, finding
from engine.review.diff import split_lines

#: a comment opener (Python, C-like, SQL, HTML, block-comment continuation)
_COMMENT = r"(#|//|/\*|<!--|--|^\s*\*)"


_PLACEHOLDER_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(rest|remainder) of (the )?(file|code|class|module|function|implementation|methods?"
        r"|content|routes?|tests?)\b.*\b(unchanged|same|as (before|is)|remains?|omitted|here|"
        r"stays?)\b",
        _COMMENT + r".*\.\.\.\s*[(\[]?\s*(existing|previous|other|remaining|original|rest"
        r"|unchanged|same)\b",
        _COMMENT + r".*\b(existing|previous|original|remaining|other) (code|implementation"
        r"|methods|functions|routes|endpoints|imports|content|tests)\s*(here|goes here|remains?"
        r"|unchanged|omitted|as before|\.\.\.)",
        r"\bpass\s*#\s*(TODO|FIXME|implement)",
        r"\b(omitted|elided|truncated|skipped) for brevity\b",
        r"\bunchanged from (the )?(original|previous|before|existing)\b",
        r"\b(your|the) (implementation|code|logic) goes here\b",
        r"^\s*(#|//|/\*|<!--|--)\s*\.\.\.\s*(\*/|-->)?\s*$",
    )
]


_TEXT_DOC_EXT = (".md", ".markdown", ".rst", ".txt", ".adoc", "")


_BRACE_EXT = (
    ".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".java", ".kt", ".go", ".rs", ".c", ".h",
    ".cc", ".cpp", ".hpp", ".cs", ".swift", ".scala", ".php", ".css", ".scss",
)  # fmt: skip


_DANGLING_ENDINGS = (",", "(", "[", "{", "\\", "=", "+", "&&", "||", "->", "=>")


def _placeholder_findings(path: str, text: str) -> list[Finding]:
    hits: list[int] = []
    for n, line in enumerate(split_lines(text), start=1):
        if any(p.search(line) for p in _PLACEHOLDER_PATTERNS):
            hits.append(n)
    if not hits:
        return []
    first = split_lines(text)[hits[0] - 1].strip()
    more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
    return [
        finding(
            "placeholder-content",
            f"a lazy placeholder instead of code: {first[:80]!r}{more}; writing this file "
            "would delete what the placeholder stands for",
            path=path,
            line=hits[0],
            fix="regenerate asking for the complete file, or write the missing part",
        )
    ]


def _brace_depth(text: str) -> int:
    """Net open brackets in C-like code, skipping strings and comments (a rough scanner)."""
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in "\"'`":
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\":
                    j += 1
                elif text[j] == "\n" and c != "`":
                    break
                j += 1
            i = j + 1
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return depth


def _truncation_reason(path: str, text: str) -> str | None:
    """Why the file looks cut off before its end (None when it does not)."""
    stripped = text.rstrip()
    if not stripped:
        return None
    last = stripped.rsplit("\n", 1)[-1].strip()
    ext = extension(path)
    if (
        ext in (".md", ".markdown")
        and sum(1 for ln in stripped.split("\n") if ln.lstrip().startswith("```")) % 2
    ):
        return "a ``` code block is never closed"
    if ext in _TEXT_DOC_EXT:
        return None
    if ext in _BRACE_EXT and _brace_depth(text) > 0:
        return f"{_brace_depth(text)} bracket(s) are never closed"
    if ext not in pysource.PYTHON_EXT and last.endswith(_DANGLING_ENDINGS):
        return f"the last line ends with {last[-2:].strip()!r}"
    return None


_PY_EOF_MESSAGES = ("was never closed", "unexpected eof", "unterminated triple-quoted")


def _python_findings(path: str, text: str) -> tuple[list[Finding], ast.Module | None]:
    try:
        tree = pysource.parse(text, filename=path)
    except (SyntaxError, ValueError) as exc:
        msg = str(getattr(exc, "msg", exc))
        lineno = getattr(exc, "lineno", None)
        n_lines = len(split_lines(text.rstrip()))
        at_end = lineno is not None and lineno >= n_lines
        if any(m in msg.lower() for m in _PY_EOF_MESSAGES) or (
            at_end and "expected an indented block" in msg
        ):
            return [
                finding(
                    "truncated-content",
                    f"the file ends mid-construct ({msg}); the answer was probably cut off",
                    path=path,
                    line=lineno,
                    fix="regenerate with a larger token budget, or complete the file",
                )
            ], None
        return [
            finding(
                "python-syntax-error",
                f"the file does not parse: {msg}",
                path=path,
                line=lineno,
                fix="fix the syntax error (python -m py_compile FILE)",
            )
        ], None
    return [], tree


def _data_findings(path: str, text: str) -> list[Finding]:
    ext = extension(path)
    line: int | None = None
    try:
        if ext == ".json":
            json.loads(text)
        elif ext == ".toml":
            tomllib.loads(text)
        elif ext in (".yaml", ".yml"):
            for _ in yaml.safe_load_all(text):
                pass
        else:
            return []
    except json.JSONDecodeError as exc:
        message, line = exc.msg, exc.lineno
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"line (\d+)", message)
        line = int(m.group(1)) if m else None
    except yaml.YAMLError as exc:
        message = str(exc).replace("\n", " ")
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
    else:
        return []
    return [
        finding(
            "data-syntax-error",
            f"the {ext[1:].upper()} does not parse: {message}",
            path=path,
            line=line,
            fix="fix the syntax",
        )
    ]


def content_findings(f: ProposedFile) -> list[Finding]:
    """The content rules on one file's new text; a Python file is parsed once, into ``f.tree``.

    Why it sets ``f.tree``: the code rules (``python_code``) and the rewrite rules read the
    same syntax tree, and a file that does not parse is reported here, once.
    """
    path, text = f.raw, f.text
    out = _placeholder_findings(path, text)
    if extension(path) in pysource.PYTHON_EXT:
        py, f.tree = _python_findings(path, text)
        out += py
    else:
        reason = _truncation_reason(path, text)
        if reason:
            out.append(
                finding(
                    "truncated-content",
                    f"the file looks cut off: {reason}",
                    path=path,
                    line=len(split_lines(text)),
                    fix="regenerate with a larger token budget, or complete the file",
                )
            )
        out += _data_findings(path, text)
    if text and not text.endswith("\n"):
        out.append(
            finding(
                "missing-final-newline",
                "the file does not end with a newline",
                path=path,
                line=len(split_lines(text)),
                fix="add a newline at the end",
            )
        )
    return out
