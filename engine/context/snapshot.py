"""The repository snapshot: its files, content ids and lexical index, cached per state.

A snapshot is keyed by the HEAD commit and the working tree state (``git status``); a changed
state re-reads only the files whose content changed (documents are cached by content id).
Files are read from the work tree, never through a symbolic link, by a few threads.
"""

from __future__ import annotations

import gc
import hashlib
import os
import threading
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from engine.context.index import _Doc, _path_text, _Postings, _Vectorizer
from engine.context.persist import _load_index, _maybe_save_index
from engine.context.render import render_tree
from engine.context.result import (
    REASON_BINARY,
    REASON_SECRET_FILE,
    REASON_SYMLINK,
    REASON_TOO_LARGE,
    REASON_UNREADABLE,
    ContextOptions,
)
from engine.context.secrets_scan import sensitive_path_reason
from engine.core.errors import RepoError
from engine.core.gitcmd import run_git_bytes, status_entries

_OWN_DIR = ".agent-tui/"


@dataclass
class _Snapshot:
    """One repository state: its files, tree renderings and lexical index."""

    root: Path
    state_key: str
    files: list[str]
    """Every listed file (tracked + untracked, not ignored, not deleted), sorted."""
    content_ids: list[str]
    docs: list[_Doc]
    position: dict[str, int]
    vocab: dict[str, int]
    content_index: _Postings
    path_index: _Postings
    by_name: dict[str, list[int]]
    secret_named: list[tuple[str, str]]
    """(path, reason) of the files whose name marks them as secret."""
    hidden: frozenset[str]
    """Files never shown, listed or ranked: secret by name, or agent-tui's own data."""
    visible: list[str]
    visible_set: frozenset[str]
    trees: dict[int, tuple[str, bool]] = field(default_factory=dict)


class _RepoCache:
    """Per-repository cache: the last snapshot and the per-content documents."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: _Snapshot | None = None
        self.docs: dict[str, _Doc] = {}
        self.path_terms: dict[str, tuple[array[int], array[int]]] = {}
        self.vectorize = _Vectorizer()


_CACHES: dict[Path, _RepoCache] = {}
_CACHES_LOCK = threading.Lock()


def _git(root: Path, *args: str) -> bytes:
    return run_git_bytes(root, *args).stdout


def _state(root: Path) -> tuple[str, list[tuple[str, str]]]:
    """The state key and the ``git status`` entries, untracked directories expanded.

    The key hashes HEAD, the status and the size and mtime of every path it names, so an
    edit of an already modified file changes the key too. Untracked files are listed in
    git's ``normal`` mode, which git's untracked cache (``core.untrackedCache``, part of
    ``feature.manyFiles``) can answer without reading every directory; the untracked
    directories it reports are then expanded with ``git ls-files --others``.
    """
    try:
        head = _git(root, "rev-parse", "--verify", "-q", "HEAD").strip()
    except RepoError:
        head = b"(no commit)"
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=normal")
    entries = status_entries(status)
    dirs = [path for code, path in entries if code == "??" and path.endswith("/")]
    if dirs:
        pathspecs = dirs if len(dirs) <= 200 else []  # many: one walk of the whole tree
        listing = _git(
            root,
            "--literal-pathspecs",
            "ls-files",
            "--others",
            "--exclude-standard",
            "-z",
            "--",
            *pathspecs,
        )
        entries = [e for e in entries if not (e[0] == "??" and e[1].endswith("/"))]
        known = {path for _code, path in entries}
        for raw in listing.split(b"\0"):
            path = raw.decode("utf-8", "surrogateescape")
            if path and path not in known:
                entries.append(("??", path))
    digest = hashlib.sha256(head + b"\0")
    for code, path in sorted(entries, key=lambda e: e[1]):
        try:
            st = os.lstat(root / path)
            stamp = f"{st.st_mtime_ns}:{st.st_size}:{st.st_mode}"
        except OSError:
            stamp = "gone"
        digest.update(f"\0{code}\0{path}\0{stamp}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32], entries


def _list_files(root: Path, entries: list[tuple[str, str]]) -> tuple[list[str], dict[str, str]]:
    """The files of the work tree and a content id for each.

    Clean tracked files are identified by their blob id (free from the index); files that
    differ from the index, and untracked ones, by their size and modification time.
    """
    ids: dict[str, str] = {}
    for record in _git(root, "ls-files", "-s", "-z").split(b"\0"):
        if not record:
            continue
        meta, _tab, raw_path = record.partition(b"\t")
        mode, blob, stage = meta.split(b" ")
        path = raw_path.decode("utf-8", "surrogateescape")
        if stage != b"0" and path in ids:
            continue
        if mode == b"160000":
            ids[path] = "submodule"
        elif mode == b"120000":
            ids[path] = "symlink"
        else:
            ids[path] = "blob:" + blob.decode("ascii")
    for code, path in entries:
        if "D" in code:
            ids.pop(path, None)
            continue
        if ids.get(path) == "submodule" or (code != "??" and code[1] == " "):
            continue  # the index blob is the work tree's content
        try:
            st = os.lstat(root / path)
        except OSError:
            ids.pop(path, None)
            continue
        if os.path.islink(root / path):
            ids[path] = "symlink"
        elif os.path.isdir(root / path):
            continue
        else:
            ids[path] = f"wt:{st.st_mtime_ns}:{st.st_size}"
    files = sorted(ids)
    return files, ids


def _read_doc(root: str, path: str, content_id: str, max_bytes: int) -> tuple[_Doc, str | None]:
    """Classify and (for text) read one file; a symbolic link is never followed."""
    empty: array[int] = array("i")
    if content_id in ("symlink", "submodule"):
        return _Doc(content_id, 0, empty, empty), None
    raw = _read_bytes(f"{root}/{path}", max_bytes)
    if raw is None:
        return _Doc(REASON_UNREADABLE, 0, empty, empty), None
    if isinstance(raw, str):
        return _Doc(raw, 0, empty, empty), None
    if len(raw) > max_bytes:
        return _Doc(REASON_TOO_LARGE, len(raw), empty, empty), None
    if b"\0" in raw[:8192]:
        return _Doc(REASON_BINARY, len(raw), empty, empty), None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _Doc(REASON_BINARY, len(raw), empty, empty), None
    return _Doc("text", len(raw), empty, empty), text


def _read_bytes(full: str, max_bytes: int) -> bytes | str | None:
    """Up to ``max_bytes + 1`` bytes of ``full``; ``symlink`` for a link, None on failure."""
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return REASON_SYMLINK if os.path.islink(full) else None
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read(max_bytes + 1)
    except OSError:
        return None


#: files one reader task reads; at most ``2 * _READ_THREADS`` tasks are ahead
_READ_RUN = 64
_READ_THREADS = 8


def _read_docs(
    root: Path, paths: list[str], ids: dict[str, str], max_bytes: int
) -> Iterator[tuple[_Doc, str | None]]:
    """``_read_doc`` of each path, in order, read by a few threads a little ahead.

    Opening and reading release the GIL, and on a large cold tree ``open`` alone costs
    ~0.1 ms a file, so threads overlap the waits while the caller indexes what came back.
    Each task reads a run of files (one future per file costs more than the read).
    """
    base = str(root)

    def read(run: list[str]) -> list[tuple[_Doc, str | None]]:
        return [_read_doc(base, path, ids[path], max_bytes) for path in run]

    if len(paths) < 4 * _READ_RUN:
        yield from read(paths)
        return
    runs = [paths[i : i + _READ_RUN] for i in range(0, len(paths), _READ_RUN)]
    with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="agent-tui-read") as pool:
        pending = [pool.submit(read, run) for run in runs[: 2 * _READ_THREADS]]
        for i in range(len(runs)):
            if i + 2 * _READ_THREADS < len(runs):
                pending.append(pool.submit(read, runs[i + 2 * _READ_THREADS]))
            yield from pending[i].result()
            pending[i] = None  # type: ignore[call-overload]


def _snapshot(root: Path, options: ContextOptions) -> tuple[_Snapshot, bool]:
    """The cached snapshot of ``root``'s current state (built or refreshed as needed)."""
    with _CACHES_LOCK:
        cache = _CACHES.setdefault(root, _RepoCache())
    with cache.lock:
        state_key, entries = _state(root)
        state_key = f"{state_key}:{options.max_file_bytes}"
        snap = cache.snapshot
        if snap is not None and snap.state_key == state_key:
            return snap, True
        # Building allocates ~10 objects per file and frees almost none: the cyclic garbage
        # collector would walk the growing heap again and again (seconds on 50,000 files).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            return _build_snapshot(root, options, cache, state_key, entries), False
        finally:
            if gc_was_on:
                gc.enable()


def _build_snapshot(
    root: Path,
    options: ContextOptions,
    cache: _RepoCache,
    state_key: str,
    entries: list[tuple[str, str]],
) -> _Snapshot:
    """A new snapshot of ``root`` in state ``state_key``, reusing ``cache``'s documents."""
    files, ids = _list_files(root, entries)
    if cache.snapshot is None and not cache.docs:  # first build in this process
        _load_index(root, cache)
    vectorize = cache.vectorize
    no_terms: array[int] = array("i")
    docs: list[_Doc] = []
    content_ids: list[str] = []
    kept: dict[str, _Doc] = {}
    path_terms: dict[str, tuple[array[int], array[int]]] = {}
    secret_named, hidden = _hidden_files(files)
    suffix = f":{options.max_file_bytes}"
    unread: dict[str, str] = {}  # content key -> a path holding that content
    for path in files:
        key = f"{ids[path]}{suffix}"
        if path not in hidden and key not in cache.docs:
            unread.setdefault(key, path)
    new_docs = _index_new_docs(root, vectorize, unread, ids, options.max_file_bytes)
    fresh = len(new_docs)
    new_paths = [path for path in files if path not in cache.path_terms and path not in hidden]
    fresh += len(new_paths)
    new_path_terms = dict(
        zip(new_paths, vectorize.many([_path_text(p) for p in new_paths]), strict=True)
    )
    for path in files:
        content_id = ids[path]
        if path in hidden:  # never opened, never indexed
            doc = _Doc(REASON_SECRET_FILE, 0, no_terms, no_terms)
        else:
            key = f"{content_id}{suffix}"
            cached = cache.docs.get(key) or new_docs[key]
            doc = kept[key] = cached
        docs.append(doc)
        content_ids.append(content_id)
        if path in hidden:  # not the project: its path's words must not weigh in the ranking
            path_terms[path] = (no_terms, no_terms)
        else:
            terms = cache.path_terms.get(path)
            path_terms[path] = new_path_terms[path] if terms is None else terms
    cache.docs = kept
    cache.path_terms = path_terms
    _maybe_save_index(root, cache, len(files), fresh)
    content_index = _Postings(len(files), [(d.terms, d.tfs) for d in docs])
    path_index = _Postings(len(files), [path_terms[p] for p in files])
    by_name: dict[str, list[int]] = {}
    for i, path in enumerate(files):
        by_name.setdefault(path.rsplit("/", 1)[-1].lower(), []).append(i)
    visible = [p for p in files if p not in hidden]
    snap = _Snapshot(
        root=root,
        state_key=state_key,
        files=files,
        content_ids=content_ids,
        docs=docs,
        position={p: i for i, p in enumerate(files)},
        vocab=vectorize.vocab,
        content_index=content_index,
        path_index=path_index,
        by_name=by_name,
        secret_named=secret_named,
        hidden=frozenset(hidden),
        visible=visible,
        visible_set=frozenset(visible),
    )
    cache.snapshot = snap
    return snap


def _hidden_files(files: Sequence[str]) -> tuple[list[tuple[str, str]], set[str]]:
    """(path, reason) of the files secret by name, and every file never shown: those, and
    agent-tui's own data (local issues, prompt profiles: not the project)."""
    secret_named: list[tuple[str, str]] = []
    hidden: set[str] = set()
    for path in files:
        reason = sensitive_path_reason(path)
        if reason is not None:
            secret_named.append((path, reason))
            hidden.add(path)
        elif path.startswith(_OWN_DIR):
            hidden.add(path)
    return secret_named, hidden


def _index_new_docs(
    root: Path,
    vectorize: _Vectorizer,
    unread: dict[str, str],
    ids: dict[str, str],
    max_bytes: int,
) -> dict[str, _Doc]:
    """Read and index the contents not cached yet (content key -> a path holding it), in
    batches of 1,024 texts while the reader threads run ahead."""
    new_docs: dict[str, _Doc] = {}
    batch: list[tuple[_Doc, str]] = []

    def index_batch() -> None:
        for (doc, _text), (terms, tfs) in zip(
            batch, vectorize.many([text for _doc, text in batch]), strict=True
        ):
            doc.terms, doc.tfs = terms, tfs
        batch.clear()

    keys = list(unread)
    read = _read_docs(root, [unread[k] for k in keys], ids, max_bytes)
    for key, (doc, text) in zip(keys, read, strict=True):
        new_docs[key] = doc
        if text is not None:
            batch.append((doc, text))
            if len(batch) >= 1024:
                index_batch()
    index_batch()
    return new_docs


def _tree(snap: _Snapshot, visible: Sequence[str], max_lines: int) -> tuple[str, bool]:
    cached = snap.trees.get(max_lines)
    if cached is None:
        cached = snap.trees[max_lines] = render_tree(visible, max_lines)
    return cached


def _read_text(root: Path, path: str, max_bytes: int) -> str | None:
    raw = _read_bytes(f"{root}/{path}", max_bytes)
    if not isinstance(raw, bytes) or len(raw) > max_bytes or b"\0" in raw[:8192]:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
