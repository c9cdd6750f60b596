"""The data that flows through agent-tui: issues in, change proposals out.

``ChangeProposal`` is the one source of truth for the model's answer: the JSON schema the
grammar enforces is generated from it (``proposal_json_schema``), and every answer is
validated against it again after generation, whatever backend produced it.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: branch suffix: lowercase kebab, at most 30 characters. The length bound lives *inside* the
#: regex because llama-cpp-python's schema converter drops ``maxLength`` when a ``pattern``
#: is present.
BRANCH_SUFFIX_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$"
#: a relative POSIX path of safe characters: 1 to 12 segments of at most 65 characters, each
#: starting with a letter, digit or ``_`` (a dot before it for hidden files), so no leading
#: slash, no ``//``, no ``.``/``..`` segments, no backslash. The bounds live inside the regex
#: (GBNF converters drop ``maxLength`` next to a ``pattern``); ``PATH_MAX`` is enforced on top
#: by pydantic and by llguidance's grammar. Plain groups, not ``(?:...)``: llama.cpp's GBNF
#: schema converters (llama-cpp-python, llama-server, Ollama) reject non-capturing groups,
#: and ``[.]`` rather than ``\.``, which llama-cpp-python's converter turns into invalid GBNF.
_SEGMENT = r"[.]?[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
PATH_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT}){{0,11}}$"
PATH_MAX = 200
COMMIT_MESSAGE_MAX = 120
PR_TITLE_MAX = 120
#: a conventional commit subject: a type, an optional ``(scope)``, ``: `` and a one-line
#: subject starting with a visible character. The bound lives inside the regex (at most
#: 8 + 22 + 2 + 88 = 120 characters), as for the paths.
CONVENTIONAL_TYPES = (
    "feat",
    "fix",
    "docs",
    "refactor",
    "test",
    "chore",
    "perf",
    "build",
    "ci",
    "style",
)
CONVENTIONAL_PATTERN = (
    rf"^({'|'.join(CONVENTIONAL_TYPES)})(\([a-z0-9][a-z0-9_-]{{0,19}}\))?: [^\s][^\n]{{0,87}}$"
)
PR_BODY_MAX = 600
"""The most characters of a PR body's text before its ``Closes #N`` (per-issue schema)."""
DEFAULT_MAX_FILES = 12
MAX_FILES_LIMIT = 100
"""The most files any configuration may allow (``[generation] max_files`` <= this)."""


class FileChange(BaseModel):
    """One complete file the model wants to write."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        pattern=PATH_PATTERN, max_length=PATH_MAX, description="Repository-relative POSIX path."
    )
    content: str = Field(description="The complete new content of the file.")


class ChangeProposal(BaseModel):
    """The model's whole answer to one issue: a branch, a commit and a pull request."""

    model_config = ConfigDict(extra="forbid")

    branch_suffix: str = Field(
        pattern=BRANCH_SUFFIX_PATTERN,
        description="Lowercase kebab-case, at most 30 characters.",
    )
    commit_message: str = Field(
        min_length=1,
        max_length=COMMIT_MESSAGE_MAX,
        description="Conventional commit message, e.g. 'feat: add health endpoint'.",
    )
    pr_title: str = Field(min_length=1, max_length=PR_TITLE_MAX)
    pr_body: str = Field(description="Markdown; must contain 'Closes #N'.")
    # The model itself only bounds what any configuration allows; the configured limit
    # (``[generation] max_files``) is the grammar's ``maxItems`` and is enforced again on the
    # final answer (``engine.generate.stream.ProposalStream``) and by the ``too-many-files`` check.
    files: list[FileChange] = Field(min_length=1, max_length=MAX_FILES_LIMIT)


def pr_body_pattern(issue_number: int) -> str:
    """The regex a PR body answering issue ``issue_number`` must match.

    The body ends with ``Closes #N`` (a full stop and a newline may follow), and it is the
    only issue reference in it: before it, a
    ``#`` is allowed only as a Markdown heading (``#`` followed by ``#`` or a space), so no
    other ``#<number>`` can be written and ``Closes #N`` cannot be followed by more text.
    ``Closes`` starts the body or follows whitespace (``word_Closes #N`` closes nothing on
    GitHub, and the ``closes-missing`` check says so). The text before it is bounded
    (``PR_BODY_MAX``), so the grammar ends the body.
    """
    if issue_number < 0:
        raise ValueError("issue_number must not be negative")
    return rf"^(([^#]|#[# ]){{0,{PR_BODY_MAX - 1}}}[ \t\n])?Closes #{issue_number}[.]?\n?$"


def proposal_json_schema(
    max_files: int = DEFAULT_MAX_FILES, issue_number: int | None = None
) -> dict[str, Any]:
    """The JSON schema of ``ChangeProposal`` with ``files`` bounded by ``max_files``.

    With ``issue_number`` it is the schema of *this* generation: ``pr_body`` must end with
    ``Closes #N`` (``pr_body_pattern``), and ``commit_message`` and ``pr_title`` must be
    conventional subjects within their length bounds (``CONVENTIONAL_PATTERN``). What the
    grammar can express is never left to a check after the fact.

    Args:
        max_files: the largest number of files one proposal may contain (>= 1).
        issue_number: the issue this generation answers (None: the generic schema).

    Returns:
        A self-contained JSON schema (``$defs`` inlined is left to the consumer).
    """
    if max_files < 1:
        raise ValueError("max_files must be at least 1")
    schema = copy.deepcopy(ChangeProposal.model_json_schema())
    schema["properties"]["files"]["maxItems"] = max_files
    if issue_number is not None:
        props = schema["properties"]
        for name in ("commit_message", "pr_title"):
            props[name]["pattern"] = CONVENTIONAL_PATTERN
        props["pr_body"]["pattern"] = pr_body_pattern(issue_number)
        props["pr_body"]["description"] = f"Markdown ending with the line 'Closes #{issue_number}'."
    return schema


#: GitHub's own limit on an issue or comment body; a longer one (a local file, a hostile
#: server) is cut here, before anything tokenizes, scans or renders it
MAX_ISSUE_BODY = 65_536
#: GitHub allows 256 characters in a title
MAX_ISSUE_TITLE = 1_024
_CUT_NOTE = "\n\n[... cut at {n:,} characters by agent-tui]"


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + _CUT_NOTE.format(n=limit)


def issue_rule_errors(proposal: ChangeProposal, issue_number: int) -> tuple[str, ...]:
    """The per-issue schema's rules that ``proposal`` breaks (``loc: msg`` lines).

    The same patterns as ``proposal_json_schema(issue_number=...)``, checked with Python's
    ``re``: a server that ignored the schema is caught by the final validation.
    """
    errors: list[str] = []
    for name in ("commit_message", "pr_title"):
        if not re.fullmatch(CONVENTIONAL_PATTERN, getattr(proposal, name)):
            errors.append(
                f"{name}: not a conventional subject within {COMMIT_MESSAGE_MAX} characters "
                "('feat: ...', 'fix(scope): ...')"
            )
    if not re.fullmatch(pr_body_pattern(issue_number), proposal.pr_body):
        errors.append(
            f"pr_body: does not end with 'Closes #{issue_number}' as its only issue reference"
        )
    return tuple(errors)


class Issue(BaseModel):
    """An issue from any source (GitHub, local Markdown), as the engine sees it."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("body")
    @classmethod
    def _cap_body(cls, value: str) -> str:
        return _cap(value, MAX_ISSUE_BODY)

    @field_validator("title")
    @classmethod
    def _cap_title(cls, value: str) -> str:
        return value[:MAX_ISSUE_TITLE]

    number: int
    title: str
    body: str = ""
    labels: list[str] = Field(default_factory=list)
    assignees: list[str] = Field(default_factory=list)
    milestone: str | None = None
    state: str = "open"
    comments: int = 0
    updated_at: datetime | None = None
    url: str | None = None
    source: str = "local"


class IssueComment(BaseModel):
    """One comment on an issue."""

    author: str
    body: str
    created_at: datetime | None = None

    @field_validator("body")
    @classmethod
    def _cap_body(cls, value: str) -> str:
        return _cap(value, MAX_ISSUE_BODY)
