"""The lexical index: words to terms, texts to term counts, and BM25 over postings.

Why apart: what a document's terms are made of is versioned as a whole (the persisted index
hashes this module's tokenizer), and scoring is numpy over arrays, with no file or git I/O.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how if in
    into is it its may might must no not of on or our should so such than that the their then
    there these this those to too was we were what when where which while who why will with
    would you your i me my add adds added use used using make new please also want need needs
    should issue bug feature fix fixes""".split()
)


_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{1,63}")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


_TERM_CACHE: dict[str, tuple[str, ...]] = {}


def _word_terms(word: str) -> tuple[str, ...]:
    """The index terms of one identifier: itself, lower-cased, and its snake/camel parts."""
    cached = _TERM_CACHE.get(word)
    if cached is not None:
        return cached
    lowered = word.lower().strip("_")
    terms: list[str] = []
    if len(lowered) >= 2 and lowered not in _STOPWORDS:
        terms.append(lowered)
    if "_" in word or not (word.islower() or word.isupper()):
        for chunk in word.split("_"):
            for part in _CAMEL_RE.findall(chunk):
                p = part.lower()
                if len(p) >= 2 and p not in _STOPWORDS and not p.isdigit() and p not in terms:
                    terms.append(p)
    result = tuple(terms)
    if len(_TERM_CACHE) < 2_000_000:
        _TERM_CACHE[word] = result
    return result


class _Vectorizer:
    """Text -> (term ids, frequencies), with term ids and each word's terms memoised."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self._word_ids: dict[str, tuple[int, ...]] = {}
        # for ``many``: word -> number, and each number's term ids (offsets into a flat list)
        self._word_index: dict[str, int] = {}
        self._term_flat: array[int] = array("i")
        self._term_offsets: array[int] = array("q", [0])

    def _ids(self, word: str) -> tuple[int, ...]:
        vocab = self.vocab
        ids = []
        for term in _word_terms(word):
            tid = vocab.get(term)
            if tid is None:
                tid = vocab[term] = len(vocab)
            ids.append(tid)
        result = tuple(ids)
        if len(self._word_ids) < 4_000_000:
            self._word_ids[word] = result
        return result

    def __call__(self, text: str) -> tuple[array[int], array[int]]:
        word_ids = self._word_ids
        acc: dict[int, int] = {}
        for word, n in Counter(_WORD_RE.findall(text)).items():
            ids = word_ids.get(word)
            if ids is None:
                ids = self._ids(word)
            for tid in ids:
                acc[tid] = acc.get(tid, 0) + n
        return array("i", acc.keys()), array("i", acc.values())

    def many(self, texts: Sequence[str]) -> list[tuple[array[int], array[int]]]:
        """``[self(text) for text in texts]`` (terms in another order), for many texts at once.

        Why: on a first build of 50,000 files the per-word Python loop of ``__call__`` is
        most of the time. Here Python only counts each text's words (``Counter``, in C)
        and maps them to word numbers (``map(dict.get)``, in C); expanding words into
        their terms and summing the counts per (text, term) is done by numpy for the whole
        batch.
        """
        if not texts:
            return []
        index = self._word_index
        word_ids: array[int] = array("i")
        counts: array[int] = array("i")
        lengths: list[int] = []
        for text in texts:
            found = Counter(_WORD_RE.findall(text))
            numbers = list(map(index.get, found))
            if None in numbers:
                numbers = [
                    self._word_number(word) if n is None else n
                    for word, n in zip(found, numbers, strict=True)
                ]
            word_ids.extend(numbers)  # type: ignore[arg-type]
            counts.extend(found.values())
            lengths.append(len(numbers))
        offsets = np.frombuffer(self._term_offsets, dtype=np.int64)
        flat = np.frombuffer(self._term_flat, dtype=np.int32)
        wid = np.frombuffer(word_ids, dtype=np.int32)
        starts = offsets[wid]
        per_word = offsets[wid + 1] - starts
        total = int(per_word.sum())
        entry = np.repeat(np.arange(len(wid), dtype=np.int64), per_word)
        position = np.arange(total, dtype=np.int64) - np.repeat(
            np.cumsum(per_word) - per_word, per_word
        )
        terms = flat[starts[entry] + position].astype(np.int64)
        tfs = np.frombuffer(counts, dtype=np.int32)[entry].astype(np.int64)
        doc = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)[entry]
        key = doc * (len(self.vocab) + 1) + terms
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if total else np.zeros(0, int)
        summed = np.add.reduceat(tfs[order], first) if total else np.zeros(0, np.int64)
        doc_of = doc[order][first]
        term_of = terms[order][first].astype(np.int32).tobytes()
        tf_bytes = summed.astype(np.int32).tobytes()
        bounds = np.searchsorted(doc_of, np.arange(len(texts) + 1)).tolist()
        out: list[tuple[array[int], array[int]]] = []
        for i in range(len(texts)):
            lo, hi = 4 * bounds[i], 4 * bounds[i + 1]
            t: array[int] = array("i")
            f: array[int] = array("i")
            t.frombytes(term_of[lo:hi])
            f.frombytes(tf_bytes[lo:hi])
            out.append((t, f))
        return out

    def _word_number(self, word: str) -> int:
        """The number of ``word`` in the batch tables, its terms added to the vocabulary."""
        ids = self._word_ids.get(word)
        if ids is None:
            ids = self._ids(word)
        number = self._word_index[word] = len(self._word_index)
        self._term_flat.extend(ids)
        self._term_offsets.append(len(self._term_flat))
        return number


def _path_text(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", " ", path)


@dataclass
class _Doc:
    """What the index knows about one file's content (cached by content id)."""

    kind: str
    """``text`` or a ``REASON_*`` code (binary, too-large, unreadable, symlink, submodule)."""
    size: int
    terms: array[int]
    tfs: array[int]


class _Postings:
    """A term -> (documents, frequencies) index in CSC form, scored with BM25."""

    def __init__(self, n_docs: int, doc_terms: Sequence[tuple[array[int], array[int]]]) -> None:
        lengths = np.fromiter((len(t) for t, _f in doc_terms), dtype=np.int64, count=n_docs)
        total = int(lengths.sum())
        if total:
            term_ids = np.frombuffer(b"".join(t.tobytes() for t, _f in doc_terms), dtype=np.int32)
            tfs = np.frombuffer(b"".join(f.tobytes() for _t, f in doc_terms), dtype=np.int32)
        else:
            term_ids = np.zeros(0, dtype=np.int32)
            tfs = np.zeros(0, dtype=np.int32)
        docs = np.repeat(np.arange(n_docs, dtype=np.int32), lengths)
        order = np.argsort(term_ids, kind="stable")
        self.terms_sorted = term_ids[order]
        self.docs = docs[order]
        self.tfs = tfs[order].astype(np.float32)
        self.doc_len = np.zeros(n_docs, dtype=np.float32)
        if total:
            self.doc_len = np.bincount(docs, weights=tfs, minlength=n_docs).astype(np.float32)
        nonzero = self.doc_len[self.doc_len > 0]
        self.avgdl = float(nonzero.mean()) if nonzero.size else 1.0
        self.n_docs = max(1, int((self.doc_len > 0).sum()))

    def score(self, query: dict[int, float], k1: float, b: float) -> np.ndarray:
        scores = np.zeros(self.doc_len.shape[0], dtype=np.float32)
        norm = k1 * (1.0 - b + b * self.doc_len / self.avgdl)
        # In the query's own order (by term text, see ``_query``), never by term id: ids
        # depend on the order terms were first met (and on a persisted index's history),
        # and float32 sums must not.
        for term_id, weight in query.items():
            lo = int(np.searchsorted(self.terms_sorted, term_id, side="left"))
            hi = int(np.searchsorted(self.terms_sorted, term_id, side="right"))
            if hi <= lo:
                continue
            docs = self.docs[lo:hi]
            tf = self.tfs[lo:hi]
            df = hi - lo
            idf = math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))
            scores[docs] += np.float32(weight * idf) * tf * (k1 + 1.0) / (tf + norm[docs])
        return scores
