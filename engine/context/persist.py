"""The index on disk: what was read once is never read again, even across restarts.

Entries are keyed by content (git's blob id for a clean tracked file; size and mtime for
others) and hold only term ids and counts, never file text. Writing happens in a background
thread, off the build's critical path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import zipfile
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.context.index import (
    _CAMEL_RE,
    _STOPWORDS,
    _WORD_RE,
    _Doc,
    _path_text,
    _Vectorizer,
    _word_terms,
)

if TYPE_CHECKING:
    from engine.context.snapshot import _RepoCache

#: repositories with fewer files are indexed in memory only (they index in well under 1 s)
_PERSIST_MIN_FILES = 2000
#: an index on disk is rewritten once this many documents are new (not for every edit)
_PERSIST_MIN_FRESH = 64
_INDEX_FORMAT = 1
_SAVE_LOCK = threading.Lock()


def _index_version() -> str:
    """Changes whenever what a document's terms are made of changes (the tokenizer)."""
    parts = [
        str(_INDEX_FORMAT),
        _WORD_RE.pattern,
        _CAMEL_RE.pattern,
        " ".join(sorted(_STOPWORDS)),
        _word_terms.__code__.co_code.hex(),
        repr(_word_terms.__code__.co_consts),
        _Vectorizer.__call__.__code__.co_code.hex(),
        _path_text.__code__.co_code.hex(),
        repr(_path_text.__code__.co_consts),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def index_path(root: Path) -> Path:
    """Where the persisted index of the repository at ``root`` lives (the user cache dir).

    Entries are keyed by content (git's blob id for a clean tracked file; size and mtime
    for others) and hold only term ids and counts, never file text.
    """
    import platformdirs

    digest = hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return Path(platformdirs.user_cache_dir("agent-tui")) / "context" / f"{digest}.npz"


def _load_index(root: Path, cache: _RepoCache) -> None:
    """Fill an empty ``cache`` from the persisted index of ``root`` (if any and current)."""
    wait_for_index_saves()  # this process may be writing it
    path = index_path(root)
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["version"]) != _index_version() or str(data["root"]) != str(root):
                return
            vocab = data["vocab"].tolist()
            doc_keys = data["doc_keys"].tolist()
            kinds = data["doc_kinds"].tolist()
            sizes = data["doc_sizes"].tolist()
            doc_offsets = data["doc_offsets"].tolist()
            doc_terms = data["doc_terms"].tobytes()
            doc_tfs = data["doc_tfs"].tobytes()
            path_keys = data["path_keys"].tolist()
            path_offsets = data["path_offsets"].tolist()
            path_terms = data["path_terms"].tobytes()
            path_tfs = data["path_tfs"].tobytes()
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return  # no index yet, or unreadable: everything is read as on a first run
    if len(doc_offsets) != len(doc_keys) + 1 or len(path_offsets) != len(path_keys) + 1:
        return

    def arrays(terms: bytes, tfs: bytes, lo: int, hi: int) -> tuple[array[int], array[int]]:
        t: array[int] = array("i")
        f: array[int] = array("i")
        t.frombytes(terms[4 * lo : 4 * hi])
        f.frombytes(tfs[4 * lo : 4 * hi])
        return t, f

    vectorize = cache.vectorize
    vectorize.vocab.update((term, i) for i, term in enumerate(vocab))
    for i, key in enumerate(doc_keys):
        t, f = arrays(doc_terms, doc_tfs, doc_offsets[i], doc_offsets[i + 1])
        cache.docs[key] = _Doc(kinds[i], sizes[i], t, f)
    for i, key in enumerate(path_keys):
        cache.path_terms[key] = arrays(path_terms, path_tfs, path_offsets[i], path_offsets[i + 1])


_SAVING: list[threading.Thread] = []


def _maybe_save_index(root: Path, cache: _RepoCache, n_files: int, fresh: int) -> None:
    """Persist ``cache`` when the repository is large and enough documents are new."""
    if n_files >= _PERSIST_MIN_FILES and (
        fresh >= _PERSIST_MIN_FRESH or (fresh and not index_path(root).exists())
    ):
        _save_index(root, cache)  # a few edited files are cheaper to read again


def _save_index(root: Path, cache: _RepoCache) -> None:
    """Persist ``cache``'s documents and path terms in a background thread.

    What is saved is taken now (the next build may grow the vocabulary); writing the file
    (~1 s on 50,000 files) happens off the build's critical path. The thread is not a
    daemon, so a CLI command that exits right after its build still leaves a whole file.
    """
    vocab = sorted(cache.vectorize.vocab, key=cache.vectorize.vocab.__getitem__)
    docs = list(cache.docs.items())
    paths = list(cache.path_terms.items())
    thread = threading.Thread(
        target=_write_index, args=(root, vocab, docs, paths), name="agent-tui-index-save"
    )
    _SAVING.append(thread)
    thread.start()


def wait_for_index_saves() -> None:
    """Wait until every persisted-index write started so far is done (tests, benches)."""
    while _SAVING:
        _SAVING.pop().join()


def _write_index(
    root: Path,
    vocab: list[str],
    docs: list[tuple[str, _Doc]],
    paths: list[tuple[str, tuple[array[int], array[int]]]],
) -> None:
    """Write the persisted index of ``root`` atomically; failures are ignored."""

    def offsets(lengths: list[int]) -> np.ndarray:
        out = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out[1:])
        return out

    def concat(parts: list[array[int]]) -> np.ndarray:
        return np.frombuffer(b"".join(a.tobytes() for a in parts), dtype=np.int32)

    target = index_path(root)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _SAVE_LOCK:
            np.savez(
                tmp,
                version=np.array(_index_version()),
                root=np.array(str(root)),
                vocab=np.array(vocab, dtype=str),
                doc_keys=np.array([k for k, _d in docs], dtype=str),
                doc_kinds=np.array([d.kind for _k, d in docs], dtype=str),
                doc_sizes=np.array([d.size for _k, d in docs], dtype=np.int64),
                doc_offsets=offsets([len(d.terms) for _k, d in docs]),
                doc_terms=concat([d.terms for _k, d in docs]),
                doc_tfs=concat([d.tfs for _k, d in docs]),
                path_keys=np.array([k for k, _t in paths], dtype=str),
                path_offsets=offsets([len(t) for _k, (t, _f) in paths]),
                path_terms=concat([t for _k, (t, _f) in paths]),
                path_tfs=concat([f for _k, (_t, f) in paths]),
            )
            os.replace(tmp, target)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            tmp.unlink()
