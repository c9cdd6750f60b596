"""Message rules: the branch suffix, ``Closes #N``, the commit and PR title style, lengths.

Why together: they judge the proposal's text fields, never its files, and their patterns are
shared with the fixes (``fixes.apply_fixes`` slugifies the branch and adds ``Closes #N`` with
the same expressions that found the problem) and with the publisher (``TRAILER_RE``: a
trailer line is refused here and stripped there).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from engine.core.models import BRANCH_SUFFIX_PATTERN, COMMIT_MESSAGE_MAX, PR_TITLE_MAX
from engine.core.textsafe import control_chars
from engine.review.checks.registry import Finding, finding

BRANCH_RE = re.compile(BRANCH_SUFFIX_PATTERN)


_CONVENTIONAL_RE = re.compile(
    r"^(feat|fix|docs|style|refactor|perf|test|tests|build|ci|chore|revert)"
    r"(\([^()\s]+\))?!?: \S"
)


CLOSES_PLACEHOLDER_RE = re.compile(
    r"(?i)\b(closes)(\s+)#(ISSUE_NUMBER|ISSUE|NUMBER|N|NN|XX?X?|\{\w*\}|<[^>]*>)(?![\w-])"
)


_CLOSING_KEYWORD_RE = re.compile(
    r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)(?!\d)"
)


def slugify_branch(text: str, issue_number: int) -> str:
    """A branch suffix from any text: lowercase ASCII, hyphens, at most 30 characters.

    Args:
        text: the model's branch suffix (or a title) to slugify.
        issue_number: used for ``issue-N`` when nothing usable is left.

    Returns:
        A suffix matching ``BRANCH_SUFFIX_PATTERN``.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:30].rstrip("-")
    if not slug:
        slug = f"issue-{issue_number}"[:30]
    return slug


def closes_issue(body: str, issue_number: int) -> bool:
    return bool(re.search(rf"(?i)\bcloses\s*:?\s+#{issue_number}(?!\d)", body))


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


#: GitHub refuses a pull request body longer than this
PR_BODY_MAX = 65_536


#: a line git (or a provenance reader) would take as a trailer naming who or what made a commit
TRAILER_RE = re.compile(
    r"^[ \t]*((?:Agent-Tui[A-Za-z0-9-]*|Signed-off-by|Co-authored-by|Reviewed-by|Acked-by|"
    r"Tested-by|Reported-by|Suggested-by|Helped-by|Change-Id)[ \t]*:)",
    re.IGNORECASE | re.MULTILINE,
)


def message_findings(proposal: Any, issue_number: int) -> list[Finding]:
    """Every message rule: the text fields' types, branch, Closes, lengths, safety, style.

    Args:
        proposal: the proposal (untrusted: a field may be of any type).
        issue_number: the issue the pull request must close.
    """
    out: list[Finding] = []
    fields: dict[str, str] = {}
    for name in ("branch_suffix", "commit_message", "pr_title", "pr_body"):
        value = text_or_none(getattr(proposal, name, None))
        if value is None:
            out.append(
                finding(
                    "proposal-malformed",
                    f"{name} is {type(getattr(proposal, name, None)).__name__}, not text",
                    fix=f"give {name} as a string",
                )
            )
        fields[name] = value or ""
    out += _branch_findings(fields, issue_number)
    out += _closes_findings(fields["pr_body"], issue_number)
    out += _length_findings(proposal, fields)
    out += _unsafe_text_findings(fields)
    out += _style_findings(fields)
    return out


def _branch_findings(fields: dict[str, str], issue_number: int) -> list[Finding]:
    """The branch suffix: lowercase letters, digits and hyphens (the fix is its slug)."""
    out: list[Finding] = []
    branch = fields["branch_suffix"]
    if not BRANCH_RE.match(branch):
        out.append(
            finding(
                "branch-suffix-invalid",
                f"branch_suffix {branch!r} is not lowercase letters, digits and hyphens, "
                "at most 30 characters",
                fix=f"use {slugify_branch(branch or fields['pr_title'], issue_number)!r}",
            )
        )
    return out


def _closes_findings(body: str, issue_number: int) -> list[Finding]:
    """``Closes #N`` for this issue, and no closing keyword for another."""
    out: list[Finding] = []
    if not closes_issue(body, issue_number):
        placeholder = CLOSES_PLACEHOLDER_RE.search(body)
        detail = f" (it has the placeholder {placeholder.group(0)!r})" if placeholder else ""
        out.append(
            finding(
                "closes-missing",
                f"pr_body does not reference the issue with 'Closes #{issue_number}'{detail}",
                fix=f"add 'Closes #{issue_number}' to the PR body",
            )
        )
    others = sorted({int(n) for n in _CLOSING_KEYWORD_RE.findall(body)} - {issue_number})
    if others:
        out.append(
            finding(
                "closes-other-issue",
                "pr_body would close other issue(s) on merge: "
                + ", ".join(f"#{n}" for n in others),
                fix="remove the closing keywords for issues this PR does not solve",
            )
        )
    return out


def _length_findings(proposal: Any, fields: dict[str, str]) -> list[Finding]:
    """Each message within its length (a missing field is reported as malformed instead)."""
    out: list[Finding] = []
    for name, code, low, high in (
        ("commit_message", "commit-message-length", 1, COMMIT_MESSAGE_MAX),
        ("pr_title", "pr-title-length", 1, PR_TITLE_MAX),
        ("pr_body", "pr-body-length", 0, PR_BODY_MAX),
    ):
        size = len(fields[name].strip()) if low else len(fields[name])
        if getattr(proposal, name, None) is not None and not low <= size <= high:
            out.append(
                finding(
                    code,
                    f"{name} is empty; it must say what the change does"
                    if size < low
                    else f"{name} is {size} characters; the limit is {high}",
                    fix=f"write {name} in {low} to {high} characters",
                )
            )
    return out


def _unsafe_text_findings(fields: dict[str, str]) -> list[Finding]:
    """Control, escape and bidi characters; trailer lines only agent-tui and git may write."""
    out: list[Finding] = []
    for name in ("commit_message", "pr_title", "pr_body"):
        bad = control_chars(fields[name], allow_newlines=name != "pr_title")
        if bad:
            out.append(
                finding(
                    "message-control-char",
                    f"{name} holds control, escape or bidi characters ({', '.join(bad[:4])}); "
                    "a terminal or a web page would obey them",
                    fix=f"remove them from {name}",
                )
            )
    for match in TRAILER_RE.finditer(fields["commit_message"]):
        out.append(
            finding(
                "message-trailer",
                f"the commit message has a trailer line {match.group(1)!r}: provenance and "
                "sign-offs are written by agent-tui and git, never by the model",
                fix="remove the line",
            )
        )
    return out


def _style_findings(fields: dict[str, str]) -> list[Finding]:
    """The commit message's first line and the PR title in the 'feat: ...' style."""
    out: list[Finding] = []
    commit_first = fields["commit_message"].split("\n", 1)[0]
    if not _CONVENTIONAL_RE.match(commit_first):
        out.append(
            finding(
                "commit-message-style",
                f"commit message {commit_first[:60]!r} is not in the 'feat: ...' / 'fix: ...' "
                "style",
                fix="start it with a type and a colon, e.g. 'feat: add health endpoint'",
            )
        )
    if not _CONVENTIONAL_RE.match(fields["pr_title"]):
        out.append(
            finding(
                "pr-title-style",
                f"PR title {fields['pr_title'][:60]!r} is not in the 'feat: ...' / 'fix: ...' "
                "style",
                fix="start it with a type and a colon, e.g. 'feat: add health endpoint'",
            )
        )
    return out
