"""The data that flows through agent-tui: issues in, change proposals out.

``ChangeProposal`` is the one source of truth for the model's answer: the JSON schema the
grammar enforces is generated from it (``proposal_json_schema``), and every answer is
validated against it again after generation, whatever backend produced it.
"""

from __future__ import annotations

import copy
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
    # final answer (``engine.stream.ProposalStream``) and by the ``too-many-files`` check.
    files: list[FileChange] = Field(min_length=1, max_length=MAX_FILES_LIMIT)


def proposal_json_schema(max_files: int = DEFAULT_MAX_FILES) -> dict[str, Any]:
    """The JSON schema of ``ChangeProposal`` with ``files`` bounded by ``max_files``.

    Args:
        max_files: the largest number of files one proposal may contain (>= 1).

    Returns:
        A self-contained JSON schema (``$defs`` inlined is left to the consumer).
    """
    if max_files < 1:
        raise ValueError("max_files must be at least 1")
    schema = copy.deepcopy(ChangeProposal.model_json_schema())
    schema["properties"]["files"]["maxItems"] = max_files
    return schema


#: GitHub's own limit on an issue or comment body; a longer one (a local file, a hostile
#: server) is cut here, before anything tokenizes, scans or renders it
MAX_ISSUE_BODY = 65_536
#: GitHub allows 256 characters in a title
MAX_ISSUE_TITLE = 1_024
_CUT_NOTE = "\n\n[... cut at {n:,} characters by agent-tui]"


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + _CUT_NOTE.format(n=limit)


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
