"""Rewrite rules: what a proposal does to files that already exist.

Why: a proposal gives whole files, so rewriting an existing file can silently drop code the
model was never shown, remove definitions other code uses, or publish local edits the user
never committed. These rules compare the proposed content with the base version (and the
user's working tree); rules on the new content alone are in ``content``.
"""

from __future__ import annotations

from engine.core.pysource import PYTHON_EXT
from engine.review.checks.python_code import definitions, safe_parse
from engine.review.checks.registry import (
    CheckLimits,
    Finding,
    ProposedFile,
    extension,
    finding,
)
from engine.review.diff import RepoBase, count_changes, split_lines

_SHOWN_LOCAL = (
    "; the model was shown that version, but the pull request is built on the base branch, "
    "so any local change the model kept is published with it"
)


_UNCOMMITTED_WHAT = {
    "modified": "this file has uncommitted edits in your working tree" + _SHOWN_LOCAL,
    "added": "this file is staged but not committed" + _SHOWN_LOCAL,
    "untracked": "this file exists only in your working tree (untracked)" + _SHOWN_LOCAL,
    "deleted": "this file is deleted in your working tree but not in the last commit; the "
    "pull request writes it with the proposed content",
}


def uncommitted_findings(files: list[ProposedFile], base: RepoBase) -> list[Finding]:
    """Files the user changed locally: the model saw that version, the PR will not start there.

    The context shows the model the working tree, while publishing commits on a fresh
    checkout of the base branch. Whatever of the local version the model copied into its
    answer goes into the pull request with it, so the user is told to look at the diff.
    """
    states = base.uncommitted(f.norm for f in files)
    out = []
    for f in files:
        state = states.get(f.norm)
        if state is None:
            continue
        out.append(
            finding(
                "uncommitted-changes",
                _UNCOMMITTED_WHAT[state],
                path=f.raw,
                fix="review the diff for local work you do not mean to publish, or commit "
                "or stash it first and regenerate",
            )
        )
    return out


def rewrite_findings(f: ProposedFile, limits: CheckLimits, shown: set[str] | None) -> list[Finding]:
    """The rules on an existing file the proposal rewrites (``f.existed``).

    Args:
        f: the proposed file; ``f.tree`` is set when its new content parsed as Python.
        limits: the thresholds of the destructive-rewrite rule.
        shown: the normalised paths the model was shown; None skips the unseen-file rule.
    """
    out: list[Finding] = []
    if shown is not None and f.norm not in shown:
        out.append(
            finding(
                "unseen-file-rewritten",
                "an existing file is rewritten although the model was not shown it; "
                "whatever it held may be lost",
                path=f.raw,
                fix="regenerate with the file in the context, or review the diff closely",
            )
        )
    if f.old is not None:
        out += _dropped_lines(f, f.old, limits)
        out += _removed_definitions(f, f.old)
    return out


def _dropped_lines(f: ProposedFile, old: str, limits: CheckLimits) -> list[Finding]:
    """An existing file losing most of its lines: the model may have dropped what it never saw."""
    old_lines = split_lines(old)
    if len(old_lines) < limits.drop_min_lines:
        return []
    added, removed = count_changes(old_lines, split_lines(f.text))
    if removed / len(old_lines) <= limits.drop_ratio:
        return []
    kept = len(old_lines) - removed
    return [
        finding(
            "destructive-drop-lines",
            f"keeps {kept} of {len(old_lines)} existing lines "
            f"({round(100 * removed / len(old_lines))}% removed), adds {added}",
            path=f.raw,
            fix="check the diff: the model may have dropped code it never saw",
        )
    ]


def _removed_definitions(f: ProposedFile, old: str) -> list[Finding]:
    """Functions, classes, methods and routes of the base version the new Python lacks."""
    if extension(f.raw) not in PYTHON_EXT or f.tree is None:
        return []
    old_tree = safe_parse(old)
    if old_tree is None:
        return []
    gone = sorted(set(definitions(old_tree)) - set(definitions(f.tree)))
    if not gone:
        return []
    shown_names = ", ".join(gone[:6]) + (" ..." if len(gone) > 6 else "")
    return [
        finding(
            "destructive-removed-definitions",
            f"removes {len(gone)} existing definition(s): {shown_names}",
            path=f.raw,
            fix="keep them, unless the issue asks for their removal",
        )
    ]
