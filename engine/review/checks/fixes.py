"""The deterministic fixes (``agent-tui check --fix``, the TUI's fix action).

Why on their own: a fix rewrites the proposal, a rule only reads it. The fixes touch only
the rules marked ``fixable`` in the rule table, with the same patterns that found the
problem (``conventions``), so a second run of the checks reports exactly what still needs
a person.
"""

from __future__ import annotations

from typing import Any

from engine.core.models import ChangeProposal, FileChange
from engine.review.checks.conventions import (
    BRANCH_RE,
    CLOSES_PLACEHOLDER_RE,
    closes_issue,
    slugify_branch,
    text_or_none,
)


def apply_fixes(proposal: Any, issue_number: int) -> ChangeProposal:
    """The deterministic fixes: slugify the branch suffix, reference the issue, end files.

    Only ``fixable`` rules are touched (``branch-suffix-invalid``, ``closes-missing``,
    ``missing-final-newline``); everything else is kept exactly as it was, so a second run
    of the checks still reports what needs a person.

    Args:
        proposal: the proposal (untrusted; fields of the wrong type are left as they are).
        issue_number: the issue the PR must close.

    Returns:
        A new proposal (validated when it passes ``ChangeProposal``'s validation, else
        built with ``model_construct`` so the checks can report what remains).
    """
    branch = getattr(proposal, "branch_suffix", None)
    title = text_or_none(getattr(proposal, "pr_title", None)) or ""
    if not isinstance(branch, str) or not BRANCH_RE.match(branch):
        branch = slugify_branch(branch if isinstance(branch, str) and branch else title,
                                issue_number)  # fmt: skip
    body = getattr(proposal, "pr_body", None)
    if isinstance(body, str) and not closes_issue(body, issue_number):
        body = CLOSES_PLACEHOLDER_RE.sub(rf"\g<1>\g<2>#{issue_number}", body, count=1)
        if not closes_issue(body, issue_number):
            body = (body.rstrip() + "\n\n" if body.strip() else "") + f"Closes #{issue_number}"
    elif body is None:
        body = f"Closes #{issue_number}"
    files: list[Any] = []
    for item in getattr(proposal, "files", None) or []:
        path = getattr(item, "path", None) if not isinstance(item, dict) else item.get("path")
        content = (
            getattr(item, "content", None) if not isinstance(item, dict) else item.get("content")
        )
        if isinstance(content, str) and content and not content.endswith("\n"):
            content += "\n"
        files.append(FileChange.model_construct(path=path, content=content))
    data = {
        "branch_suffix": branch,
        "commit_message": getattr(proposal, "commit_message", None),
        "pr_title": getattr(proposal, "pr_title", None),
        "pr_body": body,
        "files": files,
    }
    try:
        return ChangeProposal.model_validate(
            {**data, "files": [{"path": f.path, "content": f.content} for f in files]}
        )
    except Exception:
        return ChangeProposal.model_construct(
            branch_suffix=branch,
            commit_message=data["commit_message"],
            pr_title=data["pr_title"],
            pr_body=body,
            files=files,
        )
