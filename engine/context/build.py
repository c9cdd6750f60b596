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

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.context.count import _COUNT_CACHE, _SCAN_CACHE, _count, _count_messages, _scan
from engine.context.index import _Doc
from engine.context.prompts import PromptProfile, WorkedExample
from engine.context.render import (
    _SYSTEM_APPENDIX,
    _assemble,
    _tree_section,
    example_messages,
    render_file,
    render_issue,
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
    WHY_DEFINES,
    WHY_NAMED,
    WHY_RANKED,
    ContextOptions,
    ContextResult,
    CountMessages,
    CountText,
    LeftOut,
    ShownFile,
)
from engine.context.select import (
    _OTHER_LANGUAGE_WEIGHT,
    _Candidate,
    _code_identifiers,
    _code_language,
    _defines_code,
    _defining_files,
    _issue_languages,
    _issue_text,
    _named_paths,
    _other_language,
    _query,
    _tool_own,
)
from engine.context.snapshot import _CACHES, _CACHES_LOCK, _read_text, _snapshot, _tree, repo_root
from engine.core.errors import ContextTooLargeError
from engine.core.models import Issue, IssueComment


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
    budget = n_ctx - max_tokens
    if budget <= 0:
        raise ContextTooLargeError(
            f"the output reserve ({max_tokens} tokens) leaves no room for a prompt in a "
            f"{n_ctx}-token context",
            hint="raise n_ctx or lower max_tokens in the model profile",
        )
    root = repo_root(repo_dir)
    snap, cache_hit = _snapshot(root, opts)

    left_out = [
        LeftOut(path, REASON_SECRET_FILE, f"never sent: {reason}")
        for path, reason in snap.secret_named
    ]
    hidden, visible, visible_set = snap.hidden, snap.visible, snap.visible_set
    own = [p for p in visible if _tool_own(p)]
    if own:  # the tool's own config is not the project: never shown, not even in the tree
        hidden = hidden | set(own)
        visible = [p for p in visible if p not in hidden]
        visible_set = visible_set - set(own)

    system = profile.system_prompt.rstrip("\n") + "\n" + _SYSTEM_APPENDIX
    issue_part = render_issue(issue, comments)
    shots = example_messages(examples)

    # Fixed parts: system, tree, issue. The tree shrinks until it takes at most its share
    # of the budget and the fixed parts fit.
    tree_lines = max(1, opts.max_tree_lines)
    while True:
        tree, summarised = _tree(snap, visible, tree_lines)
        tree_part = _tree_section(tree, len(visible), summarised)
        base_total = _count_messages(
            count_messages, _assemble(system, tree_part, [], issue_part, shots)
        )
        tree_tokens = _count(count_text, tree_part)
        fits = base_total <= budget and tree_tokens <= opts.tree_share * budget
        if fits or tree_lines <= 4:
            break
        tree_lines = max(4, tree_lines // 2)
    if base_total > budget:
        system_tokens = _count(count_text, system)
        issue_tokens = _count(count_text, issue_part)
        raise ContextTooLargeError(
            f"the system prompt ({system_tokens} tokens), the summarised file tree "
            f"({tree_tokens}) and the issue ({issue_tokens}) take {base_total} tokens; the "
            f"budget is {budget} ({n_ctx} context - {max_tokens} reserved for the answer)",
            hint="use a model profile with a larger n_ctx, lower max_tokens, or shorten the issue",
        )

    # Candidates, in priority order: named in the issue, defining a name the issue writes in
    # a code span, always included, ranked.
    issue_text = _issue_text(issue, comments)
    named, named_missing = _named_paths(issue_text, snap, visible_set)
    candidates: list[_Candidate] = [_Candidate(p, WHY_NAMED) for p in named]
    seen = set(named)
    langs = _issue_languages(named, visible)
    identifiers = _code_identifiers(issue_text)
    for path in _defining_files(snap, identifiers, visible_set, opts.max_file_bytes):
        lang = _code_language(path)
        if (
            langs
            and lang is not None
            and lang not in langs
            and not _defines_code(root, path, identifiers, opts.max_file_bytes)
        ):
            continue  # a frontend's `type Item` does not define a Python issue's `Item`
        if path not in seen:
            seen.add(path)
            candidates.append(_Candidate(path, WHY_DEFINES))
    for pattern in profile.always_include:
        if any(ch in pattern for ch in "*?["):
            rx = re.compile(fnmatch.translate(pattern))
            matches = [p for p in visible if rx.match(p)]
        else:
            matches = [pattern] if pattern in visible_set else []
        for path in matches:
            if path not in seen:
                seen.add(path)
                candidates.append(_Candidate(path, WHY_ALWAYS))
    query = _query(issue, comments, snap.vocab)
    more_matches = 0
    if query and snap.files:
        scores = snap.content_index.score(query, opts.k1, opts.b)
        scores += np.float32(opts.path_weight) * snap.path_index.score(query, opts.k1, opts.b)
        if hidden:
            scores[[snap.position[p] for p in sorted(hidden)]] = 0.0
        foreign = _other_language(snap.files, langs)
        if foreign.any():
            scores[foreign] *= np.float32(_OTHER_LANGUAGE_WEIGHT)
        positive = np.flatnonzero(scores > 0)
        want = opts.max_candidates + len(seen) + 1
        if positive.size > want:  # keep the top ``want`` scores and every tie at the edge
            edge = np.partition(scores[positive], positive.size - want)[positive.size - want]
            top = positive[scores[positive] >= edge]
        else:
            top = positive
        # Highest score first, ties by path (files are sorted, so by index).
        order = top[np.lexsort((top, -scores[top].astype(np.float64)))]
        floor = float(scores[order[0]]) * opts.min_relative_score if order.size else 0.0
        ranked = 0
        for index in order.tolist():
            path = snap.files[index]
            if path in seen:
                continue
            if ranked >= opts.max_candidates or float(scores[index]) < floor:
                break
            ranked += 1
            seen.add(path)
            candidates.append(_Candidate(path, WHY_RANKED, round(float(scores[index]), 4)))
        already = sum(
            1 for c in candidates if c.reason != WHY_RANKED and scores[snap.position[c.path]] > 0
        )
        more_matches = int(positive.size) - ranked - already

    # Fill the budget greedily in priority order; a file that does not fit is left out whole.
    remaining = budget - base_total
    chosen: list[tuple[_Candidate, str, int]] = []
    for cand in candidates:
        index = snap.position[cand.path]
        doc = snap.docs[index]
        if doc.kind != "text":
            left_out.append(LeftOut(cand.path, doc.kind, _kind_detail(doc, opts)))
            continue
        if remaining <= 0:
            left_out.append(LeftOut(cand.path, REASON_BUDGET, "no room left in the context budget"))
            continue
        text = _read_text(root, cand.path, opts.max_file_bytes)
        if text is None:
            left_out.append(LeftOut(cand.path, REASON_UNREADABLE, "could not be read as text"))
            continue
        section = render_file(cand.path, text)
        tokens = _count(count_text, section)
        if tokens + 2 > remaining:
            left_out.append(
                LeftOut(
                    cand.path,
                    REASON_BUDGET,
                    f"needs {tokens} tokens, {max(remaining, 0)} left in the budget",
                    tokens,
                )
            )
            continue
        findings = _scan(cand.path, text)
        if findings:
            kinds = ", ".join(sorted({f"{f.kind} (line {f.line})" for f in findings}))
            left_out.append(LeftOut(cand.path, REASON_SECRET, f"the secret scan flagged: {kinds}"))
            continue
        chosen.append((cand, section, tokens))
        remaining -= tokens + 2

    # Prompt order: profile files first (stable across issues), then by priority.
    def ordered(items: list[tuple[_Candidate, str, int]]) -> list[tuple[_Candidate, str, int]]:
        always = sorted((c for c in items if c[0].reason == WHY_ALWAYS), key=lambda c: c[0].path)
        return always + [c for c in items if c[0].reason != WHY_ALWAYS]

    # Verify with the real count; drop the lowest-priority file until the prompt fits.
    while True:
        final = ordered(chosen)
        messages = _assemble(system, tree_part, [s for _c, s, _t in final], issue_part, shots)
        total = _count_messages(count_messages, messages)
        if total <= budget or not chosen:
            break
        cand, _section, tokens = chosen.pop()
        left_out.append(
            LeftOut(
                cand.path,
                REASON_BUDGET,
                f"dropped to fit: the whole prompt took {total} of {budget} tokens",
                tokens,
            )
        )
    if total > budget:  # pragma: no cover - base_total fitted, and no files remain
        raise ContextTooLargeError(f"the prompt takes {total} tokens; the budget is {budget}")

    return ContextResult(
        messages=messages,
        n_ctx=n_ctx,
        reserved_tokens=max_tokens,
        budget=budget,
        total_tokens=total,
        system_tokens=_count(count_text, system),
        tree_tokens=tree_tokens,
        issue_tokens=_count(count_text, issue_part),
        example_tokens=sum(_count(count_text, m["content"]) for m in shots),
        shown=[ShownFile(c.path, t, c.reason, c.score) for c, _s, t in final],
        left_out=left_out,
        tree_files=len(visible),
        tree_summarised=summarised,
        named_missing=named_missing,
        more_matches=more_matches,
        state_key=snap.state_key,
        cache_hit=cache_hit,
    )


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
