"""Which files the model is shown: candidates in priority order.

Paths named in the issue first, then the files defining an identifier the issue writes in a
code span, then the profile's ``always_include`` files, then the rest ranked by BM25 over
paths and contents (identifiers named in the issue weigh more; code in another language than
the issue's weighs less).
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from engine.context.index import _WORD_RE, _word_terms
from engine.context.render import _EXT_LANG
from engine.context.result import WHY_ALWAYS, WHY_DEFINES, WHY_NAMED, WHY_RANKED, ContextOptions
from engine.context.snapshot import _OWN_DIR, _read_text, _Snapshot
from engine.core.models import Issue, IssueComment

_KNOWN_EXTS = frozenset({"cfg", "lock", "in", "env", "ini", "xml", "csv", "kt", "swift", "php"})


_PATHISH_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*")
_BACKTICK_RE = re.compile(r"`([^`\n]{1,200})`")
_IDENT_RE = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]{2,63}(?![A-Za-z0-9_])")
#: keywords that introduce a definition in the usual languages (Python, JS/TS, Go, Rust...)
_DEF_WORDS = "def|class|function|func|fn|interface|struct|type|trait|enum"
_DEF_KEYWORDS = frozenset(_DEF_WORDS.split("|"))
_MAX_IDENTIFIERS = 12
_DEFINERS_PER_IDENTIFIER = 3
_MAX_DEFINERS = 6
_MAX_HOLDERS_READ = 400
"""Files read per identifier when looking for its definition (a common name is capped)."""


def _issue_text(issue: Issue, comments: Sequence[IssueComment]) -> str:
    return "\n".join([issue.title, issue.body, *(c.body for c in comments)])


def _named_paths(
    text: str, snap: _Snapshot, visible: AbstractSet[str]
) -> tuple[list[str], list[str]]:
    """Files named in ``text`` (in order of mention) and path-like names matching none."""
    found: list[str] = []
    missing: list[str] = []
    seen: set[str] = set()
    for raw in _PATHISH_RE.findall(text):
        token = (raw[2:] if raw.startswith("./") else raw).rstrip(".,:;")
        if not token or token in seen or token.endswith("/"):
            continue
        seen.add(token)
        name = PurePosixPath(token).name
        ext = name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
        if not ext and not name.startswith(".") and "/" not in token:
            continue  # a plain word, not a file name
        if ext.isdigit():
            continue  # a version number such as 2.0
        if token in visible:
            matches = [token]
        else:
            suffix = "/" + token.lower()
            matches = sorted(
                (
                    snap.files[i]
                    for i in snap.by_name.get(name.lower(), [])
                    if snap.files[i].lower().endswith(suffix) and snap.files[i] in visible
                ),
                key=lambda p: (p.count("/"), p),
            )[:3]
        if matches:
            found.extend(m for m in matches if m not in found)
        elif "." + ext in _EXT_LANG or ext in _KNOWN_EXTS:
            missing.append(token)
    return found, missing


_CODE_LANGS = frozenset(
    {"python", "javascript", "typescript", "tsx", "jsx", "go", "rust", "java", "ruby", "c", "cpp"}
)
_OTHER_LANGUAGE_WEIGHT = 0.2
"""Lexical scores of code files in another language than the issue's are multiplied by this:
a Python issue that says "Item" should not get the frontend's ``type Item`` first."""


def _tool_own(path: str) -> bool:
    """agent-tui's own files (its config, local issues, prompt profiles): not the project."""
    return path == ".agent-tui.toml" or path.startswith(_OWN_DIR)


def _code_language(path: str) -> str | None:
    lang = _EXT_LANG.get(PurePosixPath(path).suffix.lower())
    if lang in ("tsx", "jsx", "javascript"):
        lang = "typescript"  # one frontend family
    return lang if lang in _CODE_LANGS or lang == "typescript" else None


def _issue_languages(named: Sequence[str], visible: Sequence[str]) -> set[str]:
    """The code languages of the files the issue names, else the repository's main one."""
    langs = {lang for p in named if (lang := _code_language(p)) is not None}
    if langs:
        return langs
    counts = Counter(lang for p in visible if (lang := _code_language(p)) is not None)
    return {counts.most_common(1)[0][0]} if counts else set()


def _defines_code(root: Path, path: str, names: Sequence[str], max_bytes: int) -> bool:
    """Whether ``path`` defines one of ``names`` as code (a function, class...), not only
    as a type alias or interface."""
    rx = re.compile(
        r"(?<![A-Za-z0-9_])(?:def|class|function|func|fn|struct|trait|enum)\s+"
        rf"({'|'.join(re.escape(n) for n in names)})(?![A-Za-z0-9_])"
    )
    return bool(rx.search(_read_text(root, path, max_bytes) or ""))


def _other_language(files: Sequence[str], langs: set[str]) -> np.ndarray:
    """A mask of the code files written in none of ``langs``."""
    mask = np.zeros(len(files), dtype=bool)
    if not langs:
        return mask
    for i, path in enumerate(files):
        lang = _code_language(path)
        mask[i] = lang is not None and lang not in langs
    return mask


def _code_identifiers(text: str) -> list[str]:
    """Identifiers written in the issue's code spans (`like_this`), in order of mention."""
    found: list[str] = []
    for span in _BACKTICK_RE.findall(text):
        for word in _IDENT_RE.findall(span):
            if word not in found and word not in _DEF_KEYWORDS:
                found.append(word)
    return found[:_MAX_IDENTIFIERS]


def _defining_files(
    snap: _Snapshot, names: Sequence[str], visible: AbstractSet[str], max_bytes: int
) -> list[str]:
    """Files that define one of ``names`` (``def name``, ``class name``, ``func name``...).

    Why: an issue that says "fix `get_db`" names the file that defines it as surely as one
    that names its path, yet BM25 only sees a word. The index already knows which files
    hold each identifier (it is one of the word's terms), so only those are read and
    searched for a definition: a handful of files, not the repository. At most three files
    per name and six in all, in the order the names were mentioned, shallowest path first.
    """
    if not names:
        return []
    index = snap.content_index
    definition = re.compile(
        rf"(?<![A-Za-z0-9_])(?:{_DEF_WORDS})\s+({'|'.join(re.escape(n) for n in names)})"
        r"(?![A-Za-z0-9_])"
    )
    holders: set[int] = set()
    for name in names:
        term = snap.vocab.get(name.lower().strip("_"))
        if term is None:
            continue
        lo = int(np.searchsorted(index.terms_sorted, term, side="left"))
        hi = int(np.searchsorted(index.terms_sorted, term, side="right"))
        holders.update(index.docs[lo : min(hi, lo + _MAX_HOLDERS_READ)].tolist())
    by_name: dict[str, list[str]] = {}
    for doc in sorted(holders):
        path = snap.files[doc]
        if path not in visible or snap.docs[doc].kind != "text":
            continue
        text = _read_text(snap.root, path, max_bytes)
        for match in definition.finditer(text or ""):
            paths = by_name.setdefault(match.group(1), [])
            if path not in paths:
                paths.append(path)
    result: list[str] = []
    for name in names:
        ranked = sorted(by_name.get(name, []), key=lambda p: (p.count("/"), p))
        for path in ranked[:_DEFINERS_PER_IDENTIFIER]:
            if path not in result and len(result) < _MAX_DEFINERS:
                result.append(path)
    return result


def _query(
    issue: Issue, comments: Sequence[IssueComment], vocab: dict[str, int]
) -> dict[int, float]:
    """Term id -> weight: title words count double, identifiers named in code spans triple."""
    weights: dict[str, float] = {}

    def add(text: str, weight: float) -> None:
        for word in _WORD_RE.findall(text):
            is_ident = "_" in word or not (word.islower() or word.isupper() or word.istitle())
            for term in _word_terms(word):
                w = weight * (1.5 if is_ident else 1.0)
                weights[term] = max(weights.get(term, 0.0), w)

    add(issue.body, 1.0)
    for comment in comments:
        add(comment.body, 1.0)
    add(" ".join(issue.labels), 1.0)
    add(issue.title, 2.0)
    for text in [issue.title, issue.body, *(c.body for c in comments)]:
        for span in _BACKTICK_RE.findall(text):
            add(span, 3.0)
    return {vocab[t]: w for t, w in sorted(weights.items()) if t in vocab}


@dataclass
class _Candidate:
    path: str
    reason: str
    score: float = 0.0


@dataclass
class Selection:
    """The candidates in priority order, and what the issue named or matched beyond them."""

    candidates: list[_Candidate]
    named_missing: list[str]
    more_matches: int


def select_candidates(
    snap: _Snapshot,
    issue: Issue,
    comments: Sequence[IssueComment],
    always_include: Sequence[str],
    hidden: AbstractSet[str],
    visible: Sequence[str],
    visible_set: AbstractSet[str],
    opts: ContextOptions,
) -> Selection:
    """Candidates, in priority order: named in the issue, defining a name the issue writes in
    a code span, always included by the profile, ranked by BM25."""
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
            and not _defines_code(snap.root, path, identifiers, opts.max_file_bytes)
        ):
            continue  # a frontend's `type Item` does not define a Python issue's `Item`
        if path not in seen:
            seen.add(path)
            candidates.append(_Candidate(path, WHY_DEFINES))
    for path in _always_included(always_include, visible, visible_set):
        if path not in seen:
            seen.add(path)
            candidates.append(_Candidate(path, WHY_ALWAYS))
    query = _query(issue, comments, snap.vocab)
    more_matches = 0
    if query and snap.files:
        more_matches = _add_ranked(snap, query, hidden, langs, opts, candidates, seen)
    return Selection(candidates, named_missing, more_matches)


def _always_included(
    patterns: Sequence[str], visible: Sequence[str], visible_set: AbstractSet[str]
) -> list[str]:
    """The visible files the profile's ``always_include`` patterns name, pattern by pattern."""
    out: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            rx = re.compile(fnmatch.translate(pattern))
            out += [p for p in visible if rx.match(p)]
        else:
            out += [pattern] if pattern in visible_set else []
    return out


def _add_ranked(
    snap: _Snapshot,
    query: dict[int, float],
    hidden: AbstractSet[str],
    langs: set[str],
    opts: ContextOptions,
    candidates: list[_Candidate],
    seen: set[str],
) -> int:
    """Append the best BM25 matches to ``candidates``; returns how many more files matched."""
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
    return int(positive.size) - ranked - already
