"""The orchestrator: ``run_checks`` runs every rule family over one proposal.

Why a module of its own: the families each judge one thing (a path, a message, one file's
content); this module sees the whole proposal. It takes the untrusted ``files`` list apart,
applies the rules that compare files with each other or with the whole (count, total size,
duplicates, case conflicts, a file that is also a parent directory), reads each file's base
version once, decides which families run for the enabled codes, and returns the findings
sorted, errors first. Nothing here trusts ``ChangeProposal``'s own validation: any field may
hold anything.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.core.models import MAX_FILES_LIMIT
from engine.core.rules import SEVERITY_ORDER
from engine.review.checks.content import (
    _data_findings,
    _placeholder_findings,
    _python_findings,
    _truncation_reason,
)
from engine.review.checks.conventions import message_findings
from engine.review.checks.paths import lexical_path_findings, path_findings
from engine.review.checks.python_code import (
    definitions,
    requirement_findings,
    route_findings,
    safe_parse,
)
from engine.review.checks.registry import (
    PYTHON_EXT,
    CheckLimits,
    Finding,
    ProposedFile,
    extension,
    finding,
    validate_enabled,
)
from engine.review.checks.rewrites import uncommitted_findings
from engine.review.checks.secret_leaks import secret_findings
from engine.review.checks.sensitive import sensitive_findings
from engine.review.diff import RepoBase, count_changes, split_lines

_ALLOWED_CONTROL = {"\t", "\n", "\r", "\f", "\v", "\x1b"}
_CONTENT_CONTROL_RE = re.compile(
    "["
    + "".join(re.escape(chr(c)) for c in [*range(32), 127] if chr(c) not in _ALLOWED_CONTROL)
    + "]"
)


# --------------------------------------------------------------------------------------
# run_checks
# --------------------------------------------------------------------------------------


def _iter_files(proposal: Any) -> tuple[list[tuple[object, object]], list[Finding]]:
    files = getattr(proposal, "files", None)
    if not isinstance(files, list | tuple):
        return [], [
            finding(
                "proposal-malformed",
                f"files is {type(files).__name__}, not a list",
                fix="give files as a list of {path, content} objects",
            )
        ]
    pairs: list[tuple[object, object]] = []
    problems: list[Finding] = []
    for item in files:
        if isinstance(item, dict):
            pairs.append((item.get("path"), item.get("content")))
        elif hasattr(item, "path") and hasattr(item, "content"):
            pairs.append((getattr(item, "path", None), getattr(item, "content", None)))
        else:
            problems.append(
                finding(
                    "proposal-malformed",
                    f"a files entry is {type(item).__name__}, not a {{path, content}} object",
                    fix="give files as a list of {path, content} objects",
                )
            )
    return pairs, problems


def run_checks(
    proposal: Any,
    repo_dir: Path,
    issue_number: int,
    *,
    shown_files: set[str] | None = None,
    limits: CheckLimits | None = None,
    enabled: set[str] | None = None,
    base: RepoBase | None = None,
    base_ref: str | None = "HEAD",
) -> list[Finding]:
    """Every check on ``proposal`` against the repository at ``repo_dir``.

    Args:
        proposal: the ``ChangeProposal`` (untrusted: built with ``model_construct`` or
            edited, any field may hold anything).
        repo_dir: the repository the proposal would be published to.
        issue_number: the issue the proposal answers (for ``Closes #N``).
        shown_files: the paths the model was shown (the context builder's
            ``ContextResult.shown_files``); None skips the unseen-file rule.
        limits: sizes and thresholds; default ``CheckLimits()``.
        enabled: only these codes are reported (None: all).
        base: an already opened base (shared with ``engine.review.diff.diff_proposal``).
        base_ref: the git ref the proposal is compared with when ``base`` is None.

    Returns:
        The findings, errors first, then warnings, then info; by path and line within each.

    Raises:
        ConfigError: ``enabled`` names an unknown code.
        RepoError: the repository or ``base_ref`` cannot be read.
    """
    validate_enabled(enabled)
    limits = limits or CheckLimits()
    if base is None:
        base = RepoBase(repo_dir, base_ref)
    root = Path(os.path.realpath(repo_dir))

    def wanted(*codes: str) -> bool:
        return enabled is None or any(c in enabled for c in codes)

    findings: list[Finding] = []
    findings += message_findings(proposal, issue_number)
    pairs, problems = _iter_files(proposal)
    findings += problems
    if not pairs and not problems and isinstance(getattr(proposal, "files", None), list | tuple):
        findings.append(
            finding("no-files", "the proposal changes no file", fix="regenerate the proposal")
        )
    if len(pairs) > limits.max_files:
        findings.append(
            finding(
                "too-many-files",
                f"{len(pairs)} files; the limit is {limits.max_files}",
                fix="split the change, or raise generation.max_files in the config",
            )
        )

    # paths, one by one, then across the proposal
    files: list[ProposedFile] = []
    by_norm: dict[str, str] = {}
    by_fold: dict[str, str] = {}
    total_bytes = 0
    # past the most any configuration allows, paths are not examined one by one either
    for raw, content in pairs[:MAX_FILES_LIMIT]:
        path_out = path_findings(raw, root, base=base, limits=limits)
        findings += path_out
        if not isinstance(raw, str):
            continue
        norm = lexical_path_findings(raw, limits)[1]
        if norm is not None:
            fold = unicodedata.normalize("NFC", norm).casefold()
            if norm in by_norm:
                findings.append(
                    finding(
                        "path-duplicate",
                        f"the same file as {by_norm[norm]!r} after normalisation",
                        path=raw,
                        fix="give each file once",
                    )
                )
                continue
            if fold in by_fold:
                findings.append(
                    finding(
                        "path-case-conflict",
                        f"differs from {by_fold[fold]!r} only in case or Unicode form; on "
                        "macOS and Windows they are the same file",
                        path=raw,
                        fix="give each file once, with one spelling",
                    )
                )
                continue
            by_norm[norm] = raw
            by_fold[fold] = raw
        if not isinstance(content, str):
            findings.append(
                finding(
                    "proposal-malformed",
                    f"the content is {type(content).__name__}, not text",
                    path=raw,
                    fix="give the complete file content as a string",
                )
            )
            continue
        # sizes and encoding (on every file, whatever its path)
        try:
            size = len(content.encode("utf-8"))
        except UnicodeEncodeError as exc:
            line = content.count("\n", 0, exc.start) + 1
            findings.append(
                finding(
                    "content-not-utf8",
                    f"the content holds characters UTF-8 cannot encode ({exc.reason})",
                    path=raw,
                    line=line,
                    fix="regenerate the file; content must be UTF-8 text",
                )
            )
            continue
        total_bytes += size
        if size > limits.max_file_bytes:
            findings.append(
                finding(
                    "file-too-large",
                    f"{size} bytes; the limit is {limits.max_file_bytes}",
                    path=raw,
                    fix="split the file, or change it by hand",
                )
            )
            continue  # not scanned further: a 50 MB answer must not cost minutes
        bad = [m.start() for m in _CONTENT_CONTROL_RE.finditer(content)]  # a regex: 25 MB fast
        if bad:
            findings.append(
                finding(
                    "content-not-text",
                    f"the content holds {len(bad)} NUL/control character(s); it is not text",
                    path=raw,
                    line=content.count("\n", 0, bad[0]) + 1,
                    fix="regenerate the file; binary files cannot be proposed",
                )
            )
            continue
        if norm is None or any(f.severity == "error" and f.path == raw for f in path_out):
            continue
        old_bytes = base.read_bytes(norm)
        old: str | None = None
        if old_bytes is not None:
            try:
                old = old_bytes.decode("utf-8")
            except UnicodeDecodeError:
                old = None
        files.append(ProposedFile(raw, norm, content, old, old_bytes is not None))
    if total_bytes > limits.max_total_bytes:
        findings.append(
            finding(
                "total-too-large",
                f"{total_bytes} bytes in all files; the limit is {limits.max_total_bytes}",
                fix="split the change into smaller proposals",
            )
        )
    if total_bytes > limits.max_total_bytes or len(pairs) > limits.max_files:
        # refused whatever else is wrong: the content is not scanned further (100 files just
        # under the per-file limit took 298 s of secret scanning and 390,000 findings)
        files = []

    # a proposal path that is a parent of another one
    norms = {f.norm for f in files}
    for f in files:
        parts = f.norm.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in norms:
                findings.append(
                    finding(
                        "path-parent-is-file",
                        f"{parent!r} is also a file of this proposal",
                        path=f.raw,
                        fix="a path cannot be both a file and a directory",
                    )
                )
    if wanted("path-case-existing"):
        existing_fold: dict[str, str] = {}
        for p in base.files():
            existing_fold.setdefault(unicodedata.normalize("NFC", p).casefold(), p)
        for f in files:
            if f.existed:
                continue
            twin = existing_fold.get(unicodedata.normalize("NFC", f.norm).casefold())
            if twin is not None and twin != f.norm:
                findings.append(
                    finding(
                        "path-case-existing",
                        f"differs only in case from the existing {twin!r}; on macOS and "
                        "Windows this overwrites it",
                        path=f.raw,
                        fix=f"use the existing spelling {twin!r}",
                    )
                )

    shown_norm = None
    if shown_files is not None:
        shown_norm = {posixpath.normpath(p) for p in shown_files if isinstance(p, str) and p}

    for f in files:
        findings += _file_findings(f, limits, shown_norm)
    if wanted("uncommitted-changes"):
        findings += uncommitted_findings(files, base)

    if wanted("secret-in-content", "secret-high-entropy", "secret-in-message"):
        findings += secret_findings(proposal, files)
    if wanted("endpoint-without-test", "route-missing-docstring", "orm-returned-raw"):
        findings += route_findings(files)
    if wanted("missing-requirement"):
        findings += requirement_findings(files, base)

    if enabled is not None:
        findings = [f for f in findings if f.code in enabled]
    return sorted(
        _dedup_exact(findings),
        key=lambda f: (SEVERITY_ORDER[f.severity], str(f.path or ""), f.line or 0, f.code),
    )


def _dedup_exact(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[Finding] = set()
    out = []
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def _file_findings(f: ProposedFile, limits: CheckLimits, shown: set[str] | None) -> list[Finding]:
    out: list[Finding] = []
    path, text, old = f.raw, f.text, f.old
    if f.existed and old is not None and old == text:
        return [
            finding(
                "unchanged-file",
                "identical to the base; writing it changes nothing",
                path=path,
                fix="drop it from the proposal",
            )
        ]
    out += _placeholder_findings(path, text)
    if extension(path) in PYTHON_EXT:
        py, f.tree = _python_findings(path, text)
        out += py
    else:
        reason = _truncation_reason(path, text)
        if reason:
            out.append(
                finding(
                    "truncated-content",
                    f"the file looks cut off: {reason}",
                    path=path,
                    line=len(split_lines(text)),
                    fix="regenerate with a larger token budget, or complete the file",
                )
            )
        out += _data_findings(path, text)
    if text and not text.endswith("\n"):
        out.append(
            finding(
                "missing-final-newline",
                "the file does not end with a newline",
                path=path,
                line=len(split_lines(text)),
                fix="add a newline at the end",
            )
        )
    out += sensitive_findings(f.norm, text, old, path)
    if f.existed:
        if shown is not None and f.norm not in shown:
            out.append(
                finding(
                    "unseen-file-rewritten",
                    "an existing file is rewritten although the model was not shown it; "
                    "whatever it held may be lost",
                    path=path,
                    fix="regenerate with the file in the context, or review the diff closely",
                )
            )
        if old is not None:
            old_lines = split_lines(old)
            if len(old_lines) >= limits.drop_min_lines:
                added, removed = count_changes(old_lines, split_lines(text))
                if removed / len(old_lines) > limits.drop_ratio:
                    kept = len(old_lines) - removed
                    out.append(
                        finding(
                            "destructive-drop-lines",
                            f"keeps {kept} of {len(old_lines)} existing lines "
                            f"({round(100 * removed / len(old_lines))}% removed), adds {added}",
                            path=path,
                            fix="check the diff: the model may have dropped code it never saw",
                        )
                    )
            if extension(path) in PYTHON_EXT and f.tree is not None:
                old_tree = safe_parse(old)
                if old_tree is not None:
                    gone = sorted(set(definitions(old_tree)) - set(definitions(f.tree)))
                    if gone:
                        shown_names = ", ".join(gone[:6]) + (" ..." if len(gone) > 6 else "")
                        out.append(
                            finding(
                                "destructive-removed-definitions",
                                f"removes {len(gone)} existing definition(s): {shown_names}",
                                path=path,
                                fix="keep them, unless the issue asks for their removal",
                            )
                        )
    return out
