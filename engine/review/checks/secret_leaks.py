"""Secret rules: credentials the proposal would publish, in its files or its messages.

Why: a pull request is public the moment it is pushed, and a model may copy a token it saw in
the context, or invent one that looks real. The scan is the context builder's
(``engine.context.secrets_scan``, detect-secrets); a flagged line already in the base version
is not reported, since the model did not introduce it. Named as it is because a module
called ``secrets`` would shadow the standard library's.
"""

from __future__ import annotations

import posixpath
from typing import Any

from engine.context.secrets_scan import SecretFinding, scan_text
from engine.review.checks.conventions import PR_BODY_MAX, text_or_none
from engine.review.checks.registry import Finding, ProposedFile, finding
from engine.review.diff import split_lines


def _new_lines(old: str | None) -> set[str]:
    return {ln.strip() for ln in split_lines(old)} if old else set()


#: detect-secrets stops reading a file after this many flagged lines: the file is blocked by
#: then, and a file of nothing but secret-looking lines costs seconds per 100 KB otherwise.
SECRET_LINES_PER_FILE = 50


def secret_findings(proposal: Any, files: list[ProposedFile]) -> list[Finding]:
    out: list[Finding] = []
    items = [(f.norm, f.text) for f in files]
    messages: list[tuple[str, str]] = []  # (label, scan key)
    for label, attr, name in (
        ("commit message", "commit_message", "COMMIT_EDITMSG"),
        ("PR title", "pr_title", "PR_TITLE.txt"),
        ("PR body", "pr_body", "PR_BODY.md"),
    ):
        value = text_or_none(getattr(proposal, attr, None))
        if value and len(value) <= PR_BODY_MAX:  # longer: refused anyway, not scanned
            key = f"<{attr}>/{name}"  # cannot clash with a file: '<' never passes the checks
            messages.append((label, key))
            items.append((key, value))
    results = {
        key: scan_text(posixpath.basename(key), text, limit=SECRET_LINES_PER_FILE)
        for key, text in items
    }
    for f in files:
        hits = results.get(f.norm, [])
        if not hits:
            continue
        lines = split_lines(f.text)
        old_lines = _new_lines(f.old)
        by_line: dict[int, list[SecretFinding]] = {}
        for hit in hits:
            by_line.setdefault(hit.line, []).append(hit)
        for line_no, line_hits in sorted(by_line.items()):
            if 0 < line_no <= len(lines) and lines[line_no - 1].strip() in old_lines:
                continue  # carried over from the base, not introduced by the model
            named = sorted({h.kind for h in line_hits if not h.heuristic})
            if named:
                out.append(
                    finding(
                        "secret-in-content",
                        f"looks like a secret literal ({', '.join(named)})",
                        path=f.raw,
                        line=line_no,
                        fix="read it from the environment (os.getenv) or the settings "
                        "object instead of writing it in the file",
                    )
                )
            else:
                out.append(
                    finding(
                        "secret-high-entropy",
                        "a high-entropy string that may be a secret "
                        f"({', '.join(sorted({h.kind for h in line_hits}))})",
                        path=f.raw,
                        line=line_no,
                        fix="if it is a credential, read it from the environment; "
                        "acknowledge if it is a hash or test data",
                    )
                )
    for label, key in messages:
        hits = results.get(key, [])
        named = sorted({h.kind for h in hits if not h.heuristic})
        if named:
            out.append(
                finding(
                    "secret-in-message",
                    f"the {label} holds what looks like a secret ({', '.join(named)}); "
                    "it would be published",
                    line=hits[0].line,
                    fix=f"remove it from the {label}",
                )
            )
    return out
