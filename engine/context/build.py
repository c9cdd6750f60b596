"""What the model is shown: the issue, the repository's tree and files, within a token budget.

The prompt is exact, explainable and safe:

* **Exact.** Tokens are counted with the active model's own tokenizer through two functions
  handed in by the caller (``count_messages`` for the fully formatted chat prompt,
  ``count_text`` for one section), never estimated. The budget is ``n_ctx`` minus the output
  reserved for the answer; the final messages are counted again, and files are dropped until
  they fit, so the budget is never exceeded.
* **Explainable.** The result carries the token count of every section, which files were shown
  and why (named in the issue, always included by the profile, lexical relevance), and every
  file that was left out with its reason, so the UI can show exactly what the model saw.
* **Safe.** ``.env*`` files, private keys, credential files, anything the secret scan flags,
  binaries, symbolic links and files over the size limit are never sent. The issue is marked
  as untrusted text. Files are dropped whole, never cut, and :attr:`ContextResult.shown_files`
  records which existing files the model saw in full, so a rewrite of an unseen file can be
  flagged by the checks.

Relevance: paths named in the issue first, then the files defining an identifier the issue
writes in a code span, then the profile's ``always_include`` files, then the rest ranked by
BM25 over paths and contents (identifiers named in the issue weigh more).

Determinism and speed: the same repository state, issue and profile give byte-identical
messages, with the stable parts first (system prompt, tree, files, then the issue), so the
backends' prefix caches hit. The repository's file list, tree and lexical index are cached
per repository, keyed by the HEAD commit and the working tree state (``git status``); a
changed state re-reads only the files whose content changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from engine.context.count import _COUNT_CACHE, _SCAN_CACHE, _count, _count_messages, _scan
from engine.context.index import _Doc
from engine.context.outline import python_outline
from engine.context.prompts import PromptProfile, WorkedExample
from engine.context.render import (
    _SYSTEM_APPENDIX,
    OUTLINES_HEADING,
    _assemble,
    _tree_section,
    example_messages,
    render_file,
    render_issue,
    render_outline,
)
from engine.context.result import (
    REASON_BINARY,
    REASON_BUDGET,
    REASON_SECRET,
    REASON_SECRET_FILE,
    REASON_SUBMODULE,
    REASON_SYMLINK,
    REASON_TOO_LARGE,
    REASON_UNREADABLE,
    WHY_ALWAYS,
    ContextOptions,
    ContextResult,
    CountMessages,
    CountText,
    LeftOut,
    ShownFile,
)
from engine.context.select import (
    _Candidate,
    _tool_own,
    select_candidates,
)
from engine.context.snapshot import (
    _CACHES,
    _CACHES_LOCK,
    _read_text,
    _Snapshot,
    _snapshot,
    _tree,
)
from engine.core.errors import ContextTooLargeError
from engine.core.gitcmd import toplevel
from engine.core.models import Issue, IssueComment
from engine.core.pysource import is_python_path


def build_context(
    repo_dir: Path,
    issue: Issue,
    profile: PromptProfile,
    *,
    count_messages: CountMessages,
    count_text: CountText,
    n_ctx: int,
    max_tokens: int,
    comments: Sequence[IssueComment] = (),
    options: ContextOptions | None = None,
    examples: Sequence[WorkedExample] = (),
) -> ContextResult:
    """The messages for ``issue`` in ``repo_dir`` under ``profile``, within the token budget.

    Args:
        repo_dir: a directory inside the repository's git work tree.
        issue: the issue to solve.
        profile: the prompt profile (system prompt, always-included files).
        count_messages: tokens of a fully formatted chat prompt (template included), by the
            active model's tokenizer, e.g. ``backend.count_tokens``.
        count_text: tokens of one piece of text by the same tokenizer, e.g.
            ``backend.count_text``.
        n_ctx: the model's context window.
        max_tokens: the output budget reserved for the answer.
        comments: the issue's comments, oldest first.
        options: builder knobs (size limit, tree size, BM25 parameters).
        examples: worked examples sent before the issue (counted in the budget).

    Returns:
        The messages, per-section token counts, shown files and what was left out.

    Raises:
        RepoError: ``repo_dir`` is not a git work tree (or git fails).
        ContextTooLargeError: the system prompt and the issue alone do not fit.
    """
    opts = options or ContextOptions()
    budget = _budget(n_ctx, max_tokens)
    root = toplevel(repo_dir)
    snap, cache_hit = _snapshot(root, opts)

    left_out = [
        LeftOut(path, REASON_SECRET_FILE, f"never sent: {reason}")
        for path, reason in snap.secret_named
    ]
    hidden, visible, visible_set = _project_files(snap)

    system = profile.system_prompt.rstrip("\n") + "\n" + _SYSTEM_APPENDIX
    fixed = _Fixed(system, render_issue(issue, comments), example_messages(examples))
    _fit_tree(fixed, snap, visible, count_messages, count_text, budget, opts)
    if fixed.base_total > budget:
        raise _fixed_too_large(fixed, count_text, n_ctx, max_tokens)

    selection = select_candidates(
        snap, issue, comments, profile.always_include, hidden, visible, visible_set, opts
    )
    chosen = _fill_budget(
        snap, selection.candidates, budget - fixed.base_total, count_text, opts, left_out
    )
    final, messages, total = _fit_files(fixed, chosen, count_messages, budget, left_out)
    return ContextResult(
        messages=messages,
        n_ctx=n_ctx,
        reserved_tokens=max_tokens,
        budget=budget,
        total_tokens=total,
        system_tokens=_count(count_text, system),
        tree_tokens=fixed.tree_tokens,
        issue_tokens=_count(count_text, fixed.issue_part),
        example_tokens=sum(_count(count_text, m["content"]) for m in fixed.shots),
        shown=[
            ShownFile(c.cand.path, c.tokens, c.cand.reason, c.cand.score, c.outline) for c in final
        ],
        left_out=left_out,
        tree_files=len(visible),
        tree_summarised=fixed.summarised,
        named_missing=selection.named_missing,
        more_matches=selection.more_matches,
        state_key=snap.state_key,
        cache_hit=cache_hit,
    )


def _budget(n_ctx: int, max_tokens: int) -> int:
    """The most tokens the prompt may take: the context minus the answer's reserve."""
    if n_ctx - max_tokens <= 0:
        raise ContextTooLargeError(
            f"the output reserve ({max_tokens} tokens) leaves no room for a prompt in a "
            f"{n_ctx}-token context",
            hint="raise n_ctx or lower max_tokens in the model profile",
        )
    return n_ctx - max_tokens


def _project_files(snap: _Snapshot) -> tuple[AbstractSet[str], list[str], AbstractSet[str]]:
    """(hidden, visible, visible set) without agent-tui's own config: it is not the project,
    so it is never shown, not even in the tree."""
    hidden, visible, visible_set = snap.hidden, snap.visible, snap.visible_set
    own = [p for p in visible if _tool_own(p)]
    if own:
        hidden = hidden | set(own)
        visible = [p for p in visible if p not in hidden]
        visible_set = visible_set - set(own)
    return hidden, visible, visible_set


def _fixed_too_large(
    fixed: _Fixed, count_text: CountText, n_ctx: int, max_tokens: int
) -> ContextTooLargeError:
    """The error for fixed parts (system, tree, issue) that alone exceed the budget."""
    system_tokens = _count(count_text, fixed.system)
    issue_tokens = _count(count_text, fixed.issue_part)
    return ContextTooLargeError(
        f"the system prompt ({system_tokens} tokens), the summarised file tree "
        f"({fixed.tree_tokens}) and the issue ({issue_tokens}) take {fixed.base_total} tokens; "
        f"the budget is {n_ctx - max_tokens} ({n_ctx} context - {max_tokens} reserved for the "
        "answer)",
        hint="use a model profile with a larger n_ctx, lower max_tokens, or shorten the issue",
    )


@dataclass
class _Fixed:
    """The parts of the prompt every file comes on top of: system, examples, tree, issue."""

    system: str
    issue_part: str
    shots: list[dict[str, str]]
    tree_part: str = ""
    tree_tokens: int = 0
    base_total: int = 0
    summarised: bool = False

    def messages(self, files: Sequence[str], outlines: Sequence[str] = ()) -> list[dict[str, str]]:
        return _assemble(self.system, self.tree_part, files, self.issue_part, self.shots, outlines)


def _fit_tree(
    fixed: _Fixed,
    snap: _Snapshot,
    visible: Sequence[str],
    count_messages: CountMessages,
    count_text: CountText,
    budget: int,
    opts: ContextOptions,
) -> None:
    """Shrink the tree until it takes at most its share of the budget and the fixed parts fit
    (or it is down to 4 lines); sets the tree and the fixed parts' total on ``fixed``."""
    tree_lines = max(1, opts.max_tree_lines)
    while True:
        tree, fixed.summarised = _tree(snap, visible, tree_lines)
        fixed.tree_part = _tree_section(tree, len(visible), fixed.summarised)
        fixed.base_total = _count_messages(count_messages, fixed.messages([]))
        fixed.tree_tokens = _count(count_text, fixed.tree_part)
        fits = fixed.base_total <= budget and fixed.tree_tokens <= opts.tree_share * budget
        if fits or tree_lines <= 4:
            return
        tree_lines = max(4, tree_lines // 2)


@dataclass(frozen=True)
class _Chosen:
    """A candidate, its rendered section and that section's tokens."""

    cand: _Candidate
    section: str
    tokens: int
    outline: bool = False
    """The section is the file's outline (``engine.context.outline``), not its content."""


def _fill_budget(
    snap: _Snapshot,
    candidates: Sequence[_Candidate],
    remaining: int,
    count_text: CountText,
    opts: ContextOptions,
    left_out: list[LeftOut],
) -> list[_Chosen]:
    """Fill the budget greedily in priority order; a file that does not fit is shown as its
    outline where that fits (``ContextOptions.outlines``), else left out whole with its
    reason, as is a file that is not text or that the secret scan flags."""
    chosen: list[_Chosen] = []
    heading = _count(count_text, OUTLINES_HEADING)  # paid once, with the first outline
    for cand in candidates:
        doc = snap.docs[snap.position[cand.path]]
        if doc.kind != "text":
            left_out.append(LeftOut(cand.path, doc.kind, _kind_detail(doc, opts)))
            continue
        if remaining <= 0:
            left_out.append(LeftOut(cand.path, REASON_BUDGET, "no room left in the context budget"))
            continue
        text = _read_text(snap.root, cand.path, opts.max_file_bytes)
        if text is None:
            left_out.append(LeftOut(cand.path, REASON_UNREADABLE, "could not be read as text"))
            continue
        section = render_file(cand.path, text)
        tokens = _count(count_text, section)
        outline, extra = False, 0
        if tokens + 2 > remaining:
            found = _outline_section(cand.path, text, count_text) if opts.outlines else None
            extra = 0 if any(c.outline for c in chosen) else heading
            if found is None or found[1] + extra + 2 > remaining:
                left_out.append(
                    LeftOut(
                        cand.path,
                        REASON_BUDGET,
                        f"needs {tokens} tokens, {max(remaining, 0)} left in the budget",
                        tokens,
                    )
                )
                continue
            (section, tokens), outline = found, True
        findings = _scan(cand.path, text)
        if findings:
            kinds = ", ".join(sorted({f"{f.kind} (line {f.line})" for f in findings}))
            left_out.append(LeftOut(cand.path, REASON_SECRET, f"the secret scan flagged: {kinds}"))
            continue
        chosen.append(_Chosen(cand, section, tokens, outline))
        remaining -= tokens + 2 + extra
    return chosen


def _outline_section(path: str, text: str, count_text: CountText) -> tuple[str, int] | None:
    """A Python file's outline section and its tokens, or None (another language, a file
    that does not parse)."""
    if not is_python_path(path):
        return None
    outline = python_outline(text)
    if outline is None:
        return None
    section = render_outline(path, outline)
    return section, _count(count_text, section)


def _ordered(items: list[_Chosen]) -> list[_Chosen]:
    """Prompt order: profile files first (stable across issues), then by priority; outlines
    after every file shown in full (their own section)."""
    always = sorted((c for c in items if c.cand.reason == WHY_ALWAYS), key=lambda c: c.cand.path)
    ordered = always + [c for c in items if c.cand.reason != WHY_ALWAYS]
    return [c for c in ordered if not c.outline] + [c for c in ordered if c.outline]


def _fit_files(
    fixed: _Fixed,
    chosen: list[_Chosen],
    count_messages: CountMessages,
    budget: int,
    left_out: list[LeftOut],
) -> tuple[list[_Chosen], list[dict[str, str]], int]:
    """Verify with the real count; drop the lowest-priority file until the prompt fits.

    Returns:
        (the files in prompt order, the messages, their token count).
    """
    while True:
        final = _ordered(chosen)
        messages = fixed.messages(
            [c.section for c in final if not c.outline], [c.section for c in final if c.outline]
        )
        total = _count_messages(count_messages, messages)
        if total <= budget or not chosen:
            break
        dropped = chosen.pop()
        left_out.append(
            LeftOut(
                dropped.cand.path,
                REASON_BUDGET,
                f"dropped to fit: the whole prompt took {total} of {budget} tokens",
                dropped.tokens,
            )
        )
    if total > budget:  # pragma: no cover - base_total fitted, and no files remain
        raise ContextTooLargeError(f"the prompt takes {total} tokens; the budget is {budget}")
    return final, messages, total


def _kind_detail(doc: _Doc, opts: ContextOptions) -> str:
    if doc.kind == REASON_TOO_LARGE:
        return f"{doc.size} bytes, over the {opts.max_file_bytes}-byte limit"
    return {
        REASON_BINARY: "binary file",
        REASON_SYMLINK: "symbolic link (never followed)",
        REASON_SUBMODULE: "git submodule",
        REASON_UNREADABLE: "could not be read",
        REASON_SECRET_FILE: "never sent: its name marks it as holding secrets",
    }.get(doc.kind, doc.kind)


def clear_cache() -> None:
    """Forget every cached repository index (tests, benchmarks)."""
    with _CACHES_LOCK:
        _CACHES.clear()
    _SCAN_CACHE.clear()
    _COUNT_CACHE.clear()
