"""What every rule family shares: the finding, the limits, the proposed file, the enabled set.

Why a module of its own: each family (``paths``, ``conventions``, ``content``, ``sensitive``,
``python_code``, ``secret_leaks``, ``rewrites``) builds its findings through ``finding``, which
takes the severity and fixability from the rule table (``engine.core.rules.RULES``, the one
source of truth), and the orchestrator (``orchestrator.run_checks``) decides which codes run
from a prompt profile with ``enabled_for_profile``. A family imports this module and the
table, never the orchestrator, so one rule can be read and changed in one file.
"""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.core.errors import ConfigError
from engine.core.models import DEFAULT_MAX_FILES
from engine.core.rules import (
    ALWAYS_ON_CODES,
    CHECK_GROUPS,
    PUBLISH_REQUIRED,
    RULES,
    Rule,
    Severity,
    check_ids_problem,
)


def enabled_for_profile(ids: Iterable[str]) -> set[str] | None:
    """The rule codes that run for a profile whose ``checks:`` lists ``ids``.

    An empty list means every rule (a profile that says nothing opts out of nothing).
    Otherwise: the always-on rules plus the named groups and rule codes.

    Raises:
        ConfigError: an id is neither a group nor a rule code.
    """
    ids = list(ids)
    if not ids:
        return None
    problem = check_ids_problem(ids)
    if problem is not None:
        raise ConfigError(problem, hint="fix the prompt profile's checks: list")
    enabled = set(ALWAYS_ON_CODES) | PUBLISH_REQUIRED
    for i in ids:
        enabled.update(CHECK_GROUPS.get(i, (i,)))
    return enabled


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth knowing) about a proposal.

    Attributes:
        severity: ``error`` blocks publishing, ``warning`` must be acknowledged, ``info``.
        code: the rule's stable code (a key of ``RULES``).
        message: what is wrong, in words a person understands.
        path: the proposal path concerned (None for proposal-wide findings).
        line: the 1-based line in the new content, where it applies.
        fix: how to fix it.
        fixable: ``apply_fixes`` fixes it.
    """

    severity: Severity
    code: str
    message: str
    path: str | None = None
    line: int | None = None
    fix: str = ""
    fixable: bool = False

    @property
    def needs_ack(self) -> bool:
        """True for warnings: the user must acknowledge them before publishing."""
        return self.severity == "warning"

    def location(self) -> str:
        """``path:line``, ``path``, or empty."""
        if self.path is None:
            return ""
        shown = self.path if self.path.isprintable() else ascii(self.path)
        return f"{shown}:{self.line}" if self.line else shown

    def render(self) -> str:
        """The finding as terminal text (two lines when it has a fix)."""
        where = self.location()
        text = f"{self.severity:<7} {self.code:<31} {where + ': ' if where else ''}{self.message}"
        if self.fix:
            text += f"\n        fix: {self.fix}" + (
                " (agent-tui check --fix)" if self.fixable else ""
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "line": self.line,
            "fix": self.fix,
            "fixable": self.fixable,
        }


def finding(
    code: str, message: str, *, path: str | None = None, line: int | None = None, fix: str = ""
) -> Finding:
    """A finding whose severity and fixability come from its rule (one source of truth)."""
    rule = RULES[code]
    return Finding(rule.severity, code, message, path, line, fix, rule.fixable)


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding blocks publishing."""
    return any(f.severity == "error" for f in findings)


@dataclass(frozen=True)
class CheckLimits:
    """The bounds the checks enforce (sizes, thresholds of the destructive-rewrite rule)."""

    max_files: int = DEFAULT_MAX_FILES
    """Most files one proposal may contain (config: ``generation.max_files``)."""
    max_file_bytes: int = 256_000
    """Most UTF-8 bytes in one file."""
    max_total_bytes: int = 1_000_000
    """Most UTF-8 bytes in all files together."""
    max_path_bytes: int = 1024
    """Longest path, in UTF-8 bytes."""
    max_segment_bytes: int = 255
    """Longest path segment, in UTF-8 bytes (the usual filesystem limit)."""
    drop_ratio: float = 0.5
    """An existing file losing more than this share of its lines is a destructive rewrite."""
    drop_min_lines: int = 10
    """...when it had at least this many lines."""

    @classmethod
    def from_config(cls, config: Any) -> CheckLimits:
        """Limits from an ``AppConfig`` (``generation.max_files``), the rest default."""
        generation = getattr(getattr(config, "settings", config), "generation", None)
        max_files = getattr(generation, "max_files", DEFAULT_MAX_FILES)
        return cls(max_files=int(max_files))


def extension(path: str) -> str:
    return posixpath.splitext(path)[1].casefold()


@dataclass
class ProposedFile:
    """One proposed file that passed the intake (a safe path, text within the size limits).

    Why one record: every per-file family reads the same path, content and base version, and
    the Python syntax tree is parsed once (by ``content``) for the families after it.
    """

    raw: str
    """The path as the proposal gives it (findings name it)."""
    norm: str
    """The normalised repository-relative path."""
    text: str
    """The proposed content."""
    old: str | None
    """The base version's text (None: absent, or not UTF-8)."""
    existed: bool
    """The path exists in the base (even when its content is not text)."""
    tree: ast.Module | None = None
    """The new content's syntax tree, for a Python file that parses."""


def validate_enabled(enabled: set[str] | None) -> None:
    """Refuse an enabled set naming an unknown code (a typo would silently check nothing)."""
    if enabled is None:
        return
    unknown = sorted(set(enabled) - set(RULES))
    if unknown:
        raise ConfigError(
            f"unknown check code(s): {', '.join(unknown)}",
            hint="known codes: " + ", ".join(sorted(RULES)),
        )


def iter_rules() -> Iterator[Rule]:
    """Every rule, in the order of ``RULES`` (the README lists them the same way)."""
    yield from RULES.values()
