"""The context builder's results and knobs: what was shown, what was left out and why.

Plain data, no I/O: the CLI (``agent-tui prompt --json``), the TUI's context panel and the
checks read these without building anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CountMessages = Callable[[list[dict[str, str]]], int]
CountText = Callable[[str], int]

#: why a file was left out (``LeftOut.reason``)
REASON_SECRET_FILE = "secret-file"
REASON_SECRET = "secret"
REASON_BINARY = "binary"
REASON_TOO_LARGE = "too-large"
REASON_SYMLINK = "symlink"
REASON_SUBMODULE = "submodule"
REASON_UNREADABLE = "unreadable"
REASON_BUDGET = "budget"

#: why a file was shown (``ShownFile.reason``)
WHY_NAMED = "named in the issue"
WHY_DEFINES = "defines an identifier named in the issue"
WHY_ALWAYS = "always included by the profile"
WHY_RANKED = "lexical relevance"


@dataclass(frozen=True)
class ContextOptions:
    """Knobs of the context builder (defaults suit 4k-128k contexts)."""

    max_file_bytes: int = 200_000
    """Files larger than this are never sent (nor indexed)."""
    max_tree_lines: int = 300
    """The tree is summarised by directory beyond this many lines."""
    tree_share: float = 0.25
    """The tree is summarised further while it takes more than this share of the budget."""
    max_candidates: int = 40
    """Ranked files considered for the budget (beyond: counted, not listed)."""
    min_relative_score: float = 0.05
    """Ranked files scoring under this share of the best score are not considered: a word
    shared by chance (``app`` in every path) must not fill the prompt with unrelated files."""
    k1: float = 1.2
    b: float = 0.75
    path_weight: float = 2.0
    """Weight of the BM25 score over paths against the one over contents."""
    outlines: bool = True
    """A Python file too large for what is left of the budget is shown as its outline
    (signatures and their lines) when that fits."""


@dataclass(frozen=True)
class ShownFile:
    """A file shown to the model in full, or as its outline (``outline``)."""

    path: str
    tokens: int
    """Tokens of its section (header, fences and content) by ``count_text``."""
    reason: str
    """``named in the issue``, ``always included by the profile`` or ``lexical relevance``."""
    score: float = 0.0
    """Its BM25 score (0 when not ranked)."""
    outline: bool = False
    """Only its outline was shown (the whole file did not fit): it does not count as seen."""


@dataclass(frozen=True)
class LeftOut:
    """A file that was not sent, and why."""

    path: str
    reason: str
    """One of the ``REASON_*`` codes: secret-file, secret, binary, too-large, symlink,
    submodule, unreadable, budget."""
    detail: str
    """A sentence a person understands (never a secret's value)."""
    tokens: int | None = None
    """Tokens it would have taken (budget drops only)."""


@dataclass(frozen=True)
class Section:
    """The token count of one part of the prompt."""

    kind: str
    """``system``, ``example``, ``tree``, ``file``, ``outline``, ``issue``, ``overhead`` or
    ``reserved``."""
    name: str
    tokens: int


@dataclass
class ContextResult:
    """The messages to send and everything needed to explain them."""

    messages: list[dict[str, str]]
    """``[system, user]``: what would be sent, byte for byte."""
    n_ctx: int
    reserved_tokens: int
    """Output budget kept free for the answer (the profile's ``max_tokens``)."""
    budget: int
    """``n_ctx - reserved_tokens``: the most the prompt may take."""
    total_tokens: int
    """``count_messages(messages)``: always <= ``budget``."""
    system_tokens: int
    tree_tokens: int
    issue_tokens: int
    shown: list[ShownFile]
    """Files shown in full, in prompt order."""
    left_out: list[LeftOut]
    """Files not sent, with their reasons (candidates and secret files)."""
    tree_files: int
    """Files listed by git (the tree's subject)."""
    tree_summarised: bool
    """The tree collapses some directories to a file count."""
    named_missing: list[str] = field(default_factory=list)
    """Paths named in the issue that match no file of the repository."""
    more_matches: int = 0
    """Files that matched the issue's words but ranked below the candidates considered."""
    state_key: str = ""
    """The repository state the context was built from (HEAD + working tree)."""
    cache_hit: bool = False
    """The repository index was reused from an earlier build of the same state."""
    example_tokens: int = 0
    """Tokens of the worked examples' turns (issue and answer), part of ``total_tokens``."""

    @property
    def shown_files(self) -> set[str]:
        """Paths of the existing files the model saw in full (not those shown as outlines)."""
        return {f.path for f in self.shown if not f.outline}

    @property
    def file_tokens(self) -> dict[str, int]:
        """Path -> tokens of each shown file's section."""
        return {f.path: f.tokens for f in self.shown}

    @property
    def overhead_tokens(self) -> int:
        """Tokens of the chat template and section joins (total minus the sections)."""
        parts = self.system_tokens + self.tree_tokens + self.issue_tokens + self.example_tokens
        return self.total_tokens - parts - sum(f.tokens for f in self.shown)

    def sections(self) -> list[Section]:
        """Every counted part of the prompt, in prompt order, then overhead and reserved."""
        out = [
            Section("system", "system prompt", self.system_tokens),
        ]
        if self.example_tokens:
            out.append(Section("example", "worked example (issue + answer)", self.example_tokens))
        out += [
            Section("tree", "file tree", self.tree_tokens),
        ]
        out += [Section("outline" if f.outline else "file", f.path, f.tokens) for f in self.shown]
        out.append(Section("issue", "issue", self.issue_tokens))
        out.append(Section("overhead", "chat template and joins", self.overhead_tokens))
        out.append(Section("reserved", "reserved for the answer", self.reserved_tokens))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``agent-tui prompt --json``)."""
        return {
            "messages": self.messages,
            "n_ctx": self.n_ctx,
            "reserved_tokens": self.reserved_tokens,
            "budget": self.budget,
            "total_tokens": self.total_tokens,
            "sections": [
                {"kind": s.kind, "name": s.name, "tokens": s.tokens} for s in self.sections()
            ],
            "shown": [
                {"path": f.path, "tokens": f.tokens, "reason": f.reason, "score": f.score}
                for f in self.shown
            ],
            "left_out": [
                {"path": x.path, "reason": x.reason, "detail": x.detail, "tokens": x.tokens}
                for x in self.left_out
            ],
            "tree_files": self.tree_files,
            "tree_summarised": self.tree_summarised,
            "named_missing": self.named_missing,
            "more_matches": self.more_matches,
            "state_key": self.state_key,
        }
