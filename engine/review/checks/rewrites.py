"""Rewrite rules: what a proposal does to files that already exist.

Why: a proposal gives whole files, so rewriting an existing file can silently drop code the
model was never shown, remove definitions other code uses, or publish local edits the user
never committed. These rules compare the proposed content with the base version (and the
user's working tree); rules on the new content alone are in ``content``.
"""

from __future__ import annotations

from engine.review.checks.registry import Finding, ProposedFile, finding
from engine.review.diff import RepoBase

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
