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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.models import MAX_FILES_LIMIT
from engine.core.rules import SEVERITY_ORDER
from engine.review.checks.content import content_findings
from engine.review.checks.conventions import message_findings
from engine.review.checks.paths import lexical_path_findings, path_findings
from engine.review.checks.python_code import requirement_findings, route_findings
from engine.review.checks.registry import (
    CheckLimits,
    Finding,
    ProposedFile,
    finding,
    validate_enabled,
)
from engine.review.checks.rewrites import rewrite_findings, uncommitted_findings
from engine.review.checks.secret_leaks import secret_findings
from engine.review.checks.sensitive import sensitive_findings
from engine.review.diff import RepoBase

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

    findings = message_findings(proposal, issue_number)
    pairs, problems = _iter_files(proposal)
    findings += problems
    findings += _count_findings(proposal, pairs, problems, limits)

    intake = _Intake(root, base, limits)
    # past the most any configuration allows, paths are not examined one by one either
    for raw, content in pairs[:MAX_FILES_LIMIT]:
        intake.add(raw, content)
    findings += intake.findings + _total_findings(intake.total_bytes, limits)
    files = intake.files
    if intake.total_bytes > limits.max_total_bytes or len(pairs) > limits.max_files:
        # refused whatever else is wrong: the content is not scanned further (100 files just
        # under the per-file limit took 298 s of secret scanning and 390,000 findings)
        files = []

    findings += _parent_findings(files)
    if wanted("path-case-existing"):
        findings += _case_existing_findings(files, base)
    shown_norm = None
    if shown_files is not None:
        shown_norm = {posixpath.normpath(p) for p in shown_files if isinstance(p, str) and p}
    for f in files:
        findings += _file_findings(f, limits, shown_norm)
    for codes, family in _PROPOSAL_FAMILIES:
        if wanted(*codes):
            findings += family(proposal, files, base)

    if enabled is not None:
        findings = [f for f in findings if f.code in enabled]
    return sorted(
        _dedup_exact(findings),
        key=lambda f: (SEVERITY_ORDER[f.severity], str(f.path or ""), f.line or 0, f.code),
    )


#: the families run over all the proposal's files at once, in this order, each when any of
#: its codes is enabled (the families run per file are in ``_file_findings``)
_PROPOSAL_FAMILIES: tuple[
    tuple[tuple[str, ...], Callable[[Any, list[ProposedFile], RepoBase], list[Finding]]], ...
] = (
    (("uncommitted-changes",), lambda proposal, files, base: uncommitted_findings(files, base)),
    (
        ("secret-in-content", "secret-high-entropy", "secret-in-message"),
        lambda proposal, files, base: secret_findings(proposal, files),
    ),
    (
        ("endpoint-without-test", "route-missing-docstring", "orm-returned-raw"),
        lambda proposal, files, base: route_findings(files),
    ),
    (("missing-requirement",), lambda proposal, files, base: requirement_findings(files, base)),
)


def _count_findings(
    proposal: Any,
    pairs: list[tuple[object, object]],
    problems: list[Finding],
    limits: CheckLimits,
) -> list[Finding]:
    """No file at all, or more files than the limit."""
    out: list[Finding] = []
    if not pairs and not problems and isinstance(getattr(proposal, "files", None), list | tuple):
        out.append(
            finding("no-files", "the proposal changes no file", fix="regenerate the proposal")
        )
    if len(pairs) > limits.max_files:
        out.append(
            finding(
                "too-many-files",
                f"{len(pairs)} files; the limit is {limits.max_files}",
                fix="split the change, or raise generation.max_files in the config",
            )
        )
    return out


def _total_findings(total_bytes: int, limits: CheckLimits) -> list[Finding]:
    """All files together over the size limit."""
    if total_bytes <= limits.max_total_bytes:
        return []
    return [
        finding(
            "total-too-large",
            f"{total_bytes} bytes in all files; the limit is {limits.max_total_bytes}",
            fix="split the change into smaller proposals",
        )
    ]


@dataclass
class _Intake:
    """The pass over the proposal's files, one by one: what reaches the content rules.

    Why a class: the pass carries state across files (the spellings seen, for duplicates
    and case conflicts; the total size) while each file's steps stay short functions. A
    file reaches ``files`` only when its path is safe and its content is text within the
    size limit; every other file is reported once and examined no further.
    """

    root: Path
    base: RepoBase
    limits: CheckLimits
    findings: list[Finding] = field(default_factory=list)
    files: list[ProposedFile] = field(default_factory=list)
    total_bytes: int = 0
    by_norm: dict[str, str] = field(default_factory=dict)
    by_fold: dict[str, str] = field(default_factory=dict)

    def add(self, raw: object, content: object) -> None:
        """Examine one ``files`` entry (both values untrusted)."""
        path_out = path_findings(raw, self.root, base=self.base, limits=self.limits)
        self.findings += path_out
        if not isinstance(raw, str):
            return
        norm = lexical_path_findings(raw, self.limits)[1]
        if norm is not None and not self._first_spelling(raw, norm):
            return
        if not isinstance(content, str):
            self.findings.append(
                finding(
                    "proposal-malformed",
                    f"the content is {type(content).__name__}, not text",
                    path=raw,
                    fix="give the complete file content as a string",
                )
            )
            return
        if not self._is_text_within_limits(raw, content):
            return
        if norm is None or any(f.severity == "error" and f.path == raw for f in path_out):
            return
        old_bytes = self.base.read_bytes(norm)
        old: str | None = None
        if old_bytes is not None:
            try:
                old = old_bytes.decode("utf-8")
            except UnicodeDecodeError:
                old = None
        self.files.append(ProposedFile(raw, norm, content, old, old_bytes is not None))

    def _first_spelling(self, raw: str, norm: str) -> bool:
        """False (and a finding) when another entry already names the same file."""
        fold = unicodedata.normalize("NFC", norm).casefold()
        if norm in self.by_norm:
            self.findings.append(
                finding(
                    "path-duplicate",
                    f"the same file as {self.by_norm[norm]!r} after normalisation",
                    path=raw,
                    fix="give each file once",
                )
            )
            return False
        if fold in self.by_fold:
            self.findings.append(
                finding(
                    "path-case-conflict",
                    f"differs from {self.by_fold[fold]!r} only in case or Unicode form; on "
                    "macOS and Windows they are the same file",
                    path=raw,
                    fix="give each file once, with one spelling",
                )
            )
            return False
        self.by_norm[norm] = raw
        self.by_fold[fold] = raw
        return True

    def _is_text_within_limits(self, raw: str, content: str) -> bool:
        """Sizes and encoding, on every file whatever its path; counts the total size."""
        try:
            size = len(content.encode("utf-8"))
        except UnicodeEncodeError as exc:
            line = content.count("\n", 0, exc.start) + 1
            self.findings.append(
                finding(
                    "content-not-utf8",
                    f"the content holds characters UTF-8 cannot encode ({exc.reason})",
                    path=raw,
                    line=line,
                    fix="regenerate the file; content must be UTF-8 text",
                )
            )
            return False
        self.total_bytes += size
        if size > self.limits.max_file_bytes:
            self.findings.append(
                finding(
                    "file-too-large",
                    f"{size} bytes; the limit is {self.limits.max_file_bytes}",
                    path=raw,
                    fix="split the file, or change it by hand",
                )
            )
            return False  # not scanned further: a 50 MB answer must not cost minutes
        bad = [m.start() for m in _CONTENT_CONTROL_RE.finditer(content)]  # a regex: 25 MB fast
        if bad:
            self.findings.append(
                finding(
                    "content-not-text",
                    f"the content holds {len(bad)} NUL/control character(s); it is not text",
                    path=raw,
                    line=content.count("\n", 0, bad[0]) + 1,
                    fix="regenerate the file; binary files cannot be proposed",
                )
            )
            return False
        return True


def _parent_findings(files: list[ProposedFile]) -> list[Finding]:
    """A proposal path that is a parent of another one."""
    out: list[Finding] = []
    norms = {f.norm for f in files}
    for f in files:
        parts = f.norm.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in norms:
                out.append(
                    finding(
                        "path-parent-is-file",
                        f"{parent!r} is also a file of this proposal",
                        path=f.raw,
                        fix="a path cannot be both a file and a directory",
                    )
                )
    return out


def _case_existing_findings(files: list[ProposedFile], base: RepoBase) -> list[Finding]:
    """A new file whose name differs only in case from an existing one."""
    out: list[Finding] = []
    existing_fold: dict[str, str] = {}
    for p in base.files():
        existing_fold.setdefault(unicodedata.normalize("NFC", p).casefold(), p)
    for f in files:
        if f.existed:
            continue
        twin = existing_fold.get(unicodedata.normalize("NFC", f.norm).casefold())
        if twin is not None and twin != f.norm:
            out.append(
                finding(
                    "path-case-existing",
                    f"differs only in case from the existing {twin!r}; on macOS and "
                    "Windows this overwrites it",
                    path=f.raw,
                    fix=f"use the existing spelling {twin!r}",
                )
            )
    return out


def _dedup_exact(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[Finding] = set()
    out = []
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def _file_findings(f: ProposedFile, limits: CheckLimits, shown: set[str] | None) -> list[Finding]:
    """Every rule on one proposed file: its content, its path's meaning, what it rewrites.

    A file identical to its base version gets only ``unchanged-file``: nothing else about it
    would change anything.
    """
    if f.existed and f.old is not None and f.old == f.text:
        return [
            finding(
                "unchanged-file",
                "identical to the base; writing it changes nothing",
                path=f.raw,
                fix="drop it from the proposal",
            )
        ]
    out = content_findings(f)
    out += sensitive_findings(f.norm, f.text, f.old, f.raw)
    if f.existed:
        out += rewrite_findings(f, limits, shown)
    return out
