"""The data that flows through agent-tui: issues in, change proposals out.

``ChangeProposal`` is the one source of truth for the model's answer: the JSON schema the
grammar enforces is generated from it (``proposal_json_schema``), and every answer is
validated against it again after generation, whatever backend produced it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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


SECTION_TITLE_PATTERN = r"^[A-Za-z][A-Za-z0-9 ]{0,39}$"
"""A PR body section title a prompt profile may declare (plain words: no regex metacharacter)."""
SENTENCE_UNITS = 160
"""The most units (characters, or whole ``code spans``) of one sentence in a structured body."""
LIST_ITEMS_MAX = 12
MAX_SHAPE_DIRS = 300
"""The most directories a path shape lists; a larger tree leaves paths unconstrained."""


@dataclass(frozen=True)
class BodySection:
    """One ``## Title`` section a prompt profile wants in every PR body."""

    title: str
    kind: Literal["text", "list"]
    """``text``: one sentence; ``list``: one to twelve ``- `` items of one sentence each."""


@dataclass(frozen=True)
class AnswerShape:
    """What this generation's answer must look like beyond the generic schema.

    Small models loop in free prose and copy a worked example's paths into a repository that
    has none of them. Both are expressible in the grammar, so they are not left to a check:
    a PR body made of the prompt profile's sections, each one sentence (or a list of them),
    and paths that stay inside the repository's own directories.
    """

    body_sections: tuple[BodySection, ...] = ()
    """The PR body's sections in order (empty: the body is free text before ``Closes #N``)."""
    new_file_dirs: tuple[str, ...] | None = None
    """Directories (``app/api``, no trailing slash) a file may be written in, or in one new
    directory directly below one of them. ``None``: any path."""
    fixed_paths: tuple[str, ...] = ()
    """Paths allowed whatever ``new_file_dirs`` says: the top-level files that exist and the
    paths the issue names."""


def _literal(text: str) -> str:
    """``text`` as a regex literal every schema-to-grammar converter reads the same way.

    Only path and title characters reach here (``PATH_PATTERN``, ``SECTION_TITLE_PATTERN``):
    ``.`` is written ``[.]`` (see ``PATH_PATTERN``), ``-`` and ``_`` are literal outside a
    class, and nothing else is special.
    """
    return text.replace(".", "[.]")


def sentence_pattern(units: int = SENTENCE_UNITS) -> str:
    """One sentence on one line: prose without ``.`` or ``#``, and ``code spans``.

    A full stop may only end the sentence, so "It is a new endpoint. It is a new endpoint."
    cannot be written: the line must end instead. Dotted names go in code spans, as Markdown
    wants them anyway. No ``#`` anywhere, so no issue reference can be written; no control
    character (a tab, an escape), and a visible first character (a run of tabs or spaces
    is not a sentence).
    """
    code = r"`[^`\x00-\x1f#]{1,80}`"
    return rf"([^\x00-\x20#.`]|{code})([^\x00-\x1f#.`]|{code}){{0,{units - 1}}}[.]?"


def pr_body_pattern(issue_number: int, sections: tuple[BodySection, ...] = ()) -> str:
    """The regex a PR body answering issue ``issue_number`` must match.

    The body ends with ``Closes #N`` (a full stop and a newline may follow), and it is the
    only issue reference in it.

    Without ``sections``: before it, a ``#`` is allowed only as a Markdown heading (``#``
    followed by ``#`` or a space), so no other ``#<number>`` can be written and
    ``Closes #N`` cannot be followed by more text. ``Closes`` starts the body or follows
    whitespace (``word_Closes #N`` closes nothing on GitHub, and the ``closes-missing`` check
    says so). The text before it is bounded (``PR_BODY_MAX``), so the grammar ends the body.

    With ``sections``: the body is ``## Title`` then one sentence (``text``) or one to
    ``LIST_ITEMS_MAX`` items ``- sentence`` (``list``) for each section, a blank line between
    them, then ``Closes #N`` (``sentence_pattern``).
    """
    if issue_number < 0:
        raise ValueError("issue_number must not be negative")
    closes = rf"Closes #{issue_number}[.]?\n?$"
    if not sections:
        return rf"^(([^#]|#[# ]){{0,{PR_BODY_MAX - 1}}}[ \t\n])?{closes}"
    sentence = sentence_pattern()
    parts = []
    for section in sections:
        if not re.fullmatch(SECTION_TITLE_PATTERN, section.title):
            raise ValueError(f"section title {section.title!r} is not plain words")
        body = (
            rf"(- {sentence}\n){{1,{LIST_ITEMS_MAX}}}"
            if section.kind == "list"
            else rf"{sentence}\n"
        )
        parts.append(rf"## {_literal(section.title)}\n{body}")
    return "^" + r"\n".join(parts) + r"\n" + closes


def path_pattern(shape: AnswerShape) -> str:
    """The regex of a file path under ``shape`` (``PATH_PATTERN`` when it sets no bound)."""
    if shape.new_file_dirs is None:
        return PATH_PATTERN
    options = [_literal(p) for p in shape.fixed_paths if re.fullmatch(PATH_PATTERN, p)]
    dirs = [_literal(d) for d in shape.new_file_dirs if re.fullmatch(PATH_PATTERN, d)]
    if dirs:
        options.append(rf"({'|'.join(dirs)})/({_SEGMENT}/)?{_SEGMENT}")
    if not options:
        return PATH_PATTERN
    return rf"^({'|'.join(options)})$"


def proposal_json_schema(
    max_files: int = DEFAULT_MAX_FILES,
    issue_number: int | None = None,
    shape: AnswerShape | None = None,
) -> dict[str, Any]:
    """The JSON schema of ``ChangeProposal`` with ``files`` bounded by ``max_files``.

    With ``issue_number`` it is the schema of *this* generation: ``pr_body`` must end with
    ``Closes #N`` (``pr_body_pattern``), and ``commit_message`` and ``pr_title`` must be
    conventional subjects within their length bounds (``CONVENTIONAL_PATTERN``). With a
    ``shape`` the body is made of its sections and the paths stay in its directories. What
    the grammar can express is never left to a check after the fact.

    Args:
        max_files: the largest number of files one proposal may contain (>= 1).
        issue_number: the issue this generation answers (None: the generic schema).
        shape: the profile's body sections and the repository's directories.

    Returns:
        A self-contained JSON schema (``$defs`` inlined is left to the consumer).
    """
    if max_files < 1:
        raise ValueError("max_files must be at least 1")
    schema = copy.deepcopy(ChangeProposal.model_json_schema())
    schema["properties"]["files"]["maxItems"] = max_files
    if shape is not None:
        path = schema["$defs"]["FileChange"]["properties"]["path"]
        path["pattern"] = path_pattern(shape)
    if issue_number is not None:
        props = schema["properties"]
        for name in ("commit_message", "pr_title"):
            props[name]["pattern"] = CONVENTIONAL_PATTERN
        sections = shape.body_sections if shape is not None else ()
        props["pr_body"]["pattern"] = pr_body_pattern(issue_number, sections)
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


def issue_rule_errors(
    proposal: ChangeProposal, issue_number: int, shape: AnswerShape | None = None
) -> tuple[str, ...]:
    """The per-issue schema's rules that ``proposal`` breaks (``loc: msg`` lines).

    The same patterns as ``proposal_json_schema(issue_number=..., shape=...)``, checked with
    Python's ``re``: a server that ignored the schema is caught by the final validation.
    """
    errors: list[str] = []
    if shape is not None:
        pattern = path_pattern(shape)
        for i, change in enumerate(proposal.files):
            if not re.fullmatch(pattern, change.path):
                errors.append(
                    f"files[{i}].path: {change.path!r} is outside the repository's directories"
                )
    for name in ("commit_message", "pr_title"):
        if not re.fullmatch(CONVENTIONAL_PATTERN, getattr(proposal, name)):
            errors.append(
                f"{name}: not a conventional subject within {COMMIT_MESSAGE_MAX} characters "
                "('feat: ...', 'fix(scope): ...')"
            )
    sections = shape.body_sections if shape is not None else ()
    if not re.fullmatch(pr_body_pattern(issue_number, sections), proposal.pr_body):
        if sections:
            titles = ", ".join(s.title for s in sections)
            errors.append(
                f"pr_body: not the sections {titles} (one sentence or a list each) ending "
                f"with 'Closes #{issue_number}'"
            )
        else:
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
