"""The rule table: every check's stable code, severity and summary, and the groups a prompt
profile selects.

Why in the core: the codes are a contract shared by stages that must not import each other --
the checks (review) run the rules, a prompt profile (context) names them in its ``checks:``
list, and scripts and configs refer to them. Rules are listed once, here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Rule:
    """One rule: its stable code, its severity, and one line saying what it catches."""

    code: str
    severity: Severity
    summary: str
    fixable: bool = False


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {r.code: r for r in rules}


#: every rule the checks know, by code. Codes are stable: scripts and configs refer to them.
RULES: dict[str, Rule] = _rules(
    # the proposal's shape
    Rule("proposal-malformed", "error", "a field has the wrong type (not text, files not a list)"),
    Rule("no-files", "error", "the proposal changes no file"),
    Rule("too-many-files", "error", "more files than the limit (generation.max_files)"),
    # paths
    Rule("path-empty", "error", "a file path is empty"),
    Rule(
        "path-control-char",
        "error",
        "a path holds NUL, control, invisible or unencodable characters",
    ),
    Rule("path-backslash", "error", "a path uses backslashes"),
    Rule("path-absolute", "error", "a path is absolute"),
    Rule("path-drive", "error", "a path starts with a drive letter (C:)"),
    Rule("path-traversal", "error", "a path has a '..' segment"),
    Rule("path-not-normalised", "error", "a path has '.' or empty segments or a trailing '/'"),
    Rule("path-too-long", "error", "a path or one of its segments is too long"),
    Rule(
        "path-not-portable",
        "error",
        "a path has characters outside A-Z a-z 0-9 _ . - (non-ASCII look-alikes, spaces...)",
    ),
    Rule(
        "path-segment-start",
        "error",
        "a path segment starts with '-' or another character than a letter, digit or '_'",
    ),
    Rule("path-too-deep", "error", "a path has more than 12 segments"),
    Rule("path-git-dir", "error", "a path is inside .git (any case)"),
    Rule(
        "path-symlink-escape",
        "error",
        "a path goes through a symlink leaving the repo or into .git",
    ),
    Rule("path-unresolvable", "error", "a path cannot be examined (symlink loop, OS error)"),
    Rule("path-through-symlink", "warning", "a path goes through a symlink that stays in the repo"),
    Rule("path-is-directory", "error", "a path is an existing directory (or submodule)"),
    Rule("path-not-regular-file", "error", "a path is a FIFO, socket or device"),
    Rule("path-parent-is-file", "error", "a parent of a path is a file"),
    Rule("path-duplicate", "error", "two paths are equal after normalisation"),
    Rule("path-case-conflict", "error", "two paths differ only in case or Unicode form"),
    Rule("path-case-existing", "warning", "a new path differs only in case from an existing file"),
    # content
    Rule("file-too-large", "error", "a file is larger than the per-file byte limit"),
    Rule("total-too-large", "error", "all files together are larger than the byte limit"),
    Rule("content-not-utf8", "error", "a file's content cannot be encoded as UTF-8"),
    Rule("content-not-text", "error", "a file's content holds NUL or control characters"),
    Rule("secret-in-content", "error", "a private key, cloud key, token or password literal"),
    Rule("secret-high-entropy", "warning", "a high-entropy string that may be a secret"),
    Rule("secret-in-message", "error", "a secret in the commit message, PR title or PR body"),
    Rule("commit-message-length", "error", "the commit message is empty or over 120 characters"),
    Rule("pr-title-length", "error", "the PR title is empty or over 120 characters"),
    Rule("pr-body-length", "error", "the PR body is over 65,536 characters (GitHub's limit)"),
    Rule(
        "message-control-char",
        "error",
        "control, escape or bidi characters in the commit message, PR title or PR body",
    ),
    Rule(
        "message-trailer",
        "error",
        "a trailer line (Signed-off-by:, Agent-Tui-*:) in the commit message; the app writes them",
    ),
    # sensitive paths: a change there runs code on someone's machine
    Rule("sensitive-ci", "warning", "a CI configuration (.github/, .gitlab-ci.yml...)"),
    Rule("sensitive-git-hooks", "warning", "git hooks (.githooks/, .husky/, pre-commit config)"),
    Rule("sensitive-docker", "warning", "Dockerfile or docker-compose file"),
    Rule(
        "sensitive-build", "warning", "build hooks: setup.py, setup.cfg, pyproject build sections"
    ),
    Rule("sensitive-makefile", "warning", "Makefile, *.mk, justfile, Taskfile"),
    Rule("sensitive-shell", "warning", "a shell script (.sh, .ps1, .bat... or a #!/bin/sh line)"),
    Rule("sensitive-dependencies", "warning", "dependency files and pyproject dependency lists"),
    Rule(
        "sensitive-gitattributes",
        "warning",
        ".gitattributes: a filter runs code, linguist-generated/-diff hide a diff",
    ),
    Rule(
        "sensitive-dev-env",
        "warning",
        "files an editor or shell runs: .envrc, .vscode/tasks.json, launch.json, settings.json",
    ),
    Rule(
        "sensitive-agent-config",
        "warning",
        "agent-tui's own config or prompts: .agent-tui.toml, .agent-tui/prompts/*",
    ),
    Rule(
        "sensitive-test-config", "warning", "conftest.py and test runner config run with the tests"
    ),
    # destructive rewrites
    Rule("destructive-drop-lines", "warning", "an existing file loses most of its lines"),
    Rule("destructive-removed-definitions", "warning", "existing functions/classes/routes removed"),
    Rule("unseen-file-rewritten", "warning", "an existing file rewritten though not shown"),
    Rule("unchanged-file", "info", "a file identical to its base (a no-op)"),
    Rule(
        "uncommitted-changes",
        "warning",
        "a file with uncommitted local changes (shown to the model; the PR starts from the base)",
    ),
    # the seed's rules (prompts/backend-dev.md)
    Rule("branch-suffix-invalid", "error", "branch_suffix not lowercase-hyphen, <= 30", True),
    Rule("closes-missing", "error", "pr_body lacks 'Closes #N' for this issue", True),
    Rule("closes-other-issue", "warning", "pr_body closes another issue"),
    Rule("commit-message-style", "warning", "commit message not 'feat: ...'/'fix: ...' style"),
    Rule("pr-title-style", "warning", "PR title not 'feat: ...'/'fix: ...' style"),
    Rule("placeholder-content", "error", "a lazy placeholder instead of the complete file"),
    Rule("python-syntax-error", "error", "a Python file does not parse"),
    Rule("data-syntax-error", "error", "a JSON, TOML or YAML file does not parse"),
    Rule("truncated-content", "error", "a file ends mid-construct (truncated last line)"),
    Rule("missing-final-newline", "info", "a file does not end with a newline", True),
    Rule("endpoint-without-test", "warning", "a new route with no test file that exercises it"),
    Rule("missing-requirement", "warning", "a new third-party import no requirements names"),
    Rule("route-missing-docstring", "info", "a route handler without a docstring"),
    Rule("orm-returned-raw", "info", "a route handler seems to return an ORM object raw"),
)


#: The convention rules a prompt profile selects with its ``checks:`` list, by group id. A
#: profile is one team's way of working (its branch names, title style, test policy), so its
#: rules are opt-in per profile. Every other rule guards safety or correctness (paths, sizes,
#: secrets, sensitive files, destructive rewrites) and runs whatever the profile says.
CHECK_GROUPS: dict[str, tuple[str, ...]] = {
    "branch-suffix": ("branch-suffix-invalid",),
    "closes-issue": ("closes-missing", "closes-other-issue"),
    "conventional-title": ("commit-message-style", "pr-title-style"),
    "complete-files": (
        "placeholder-content",
        "truncated-content",
        "python-syntax-error",
        "data-syntax-error",
        "missing-final-newline",
    ),
    "endpoint-tests": ("endpoint-without-test",),
    "requirements": ("missing-requirement",),
    "route-docstrings": ("route-missing-docstring",),
    "orm-responses": ("orm-returned-raw",),
}
CONVENTION_CODES: frozenset[str] = frozenset(c for codes in CHECK_GROUPS.values() for c in codes)
ALWAYS_ON_CODES: frozenset[str] = frozenset(RULES) - CONVENTION_CODES
"""Rules no profile can turn off."""
PUBLISH_REQUIRED: frozenset[str] = frozenset({"branch-suffix-invalid"})
"""Convention rules that publishing enforces anyway (the proposal model's branch pattern), so
they run whatever the profile says: ``check`` never calls publishable what ``publish``
refuses."""


def check_ids_problem(ids: Iterable[str]) -> str | None:
    """Why a profile's ``checks:`` list is wrong (an unknown id), or None when it is fine."""
    unknown = [i for i in ids if i not in CHECK_GROUPS and i not in RULES]
    if not unknown:
        return None
    return (
        f"unknown check id(s) {', '.join(map(repr, unknown))}; a check id is a group "
        f"({', '.join(CHECK_GROUPS)}) or a rule code (the README's Checks table)"
    )
