"""Token counts and secret scans of prompt sections, memoised by content digest.

A repeated build of the same repository state counts and scans nothing again; an estimating
backend is asked every time (its calibration moves).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from engine.context.result import CountMessages, CountText
from engine.context.secrets_scan import SecretFinding, scan_text

_SCAN_CACHE: OrderedDict[str, list[SecretFinding]] = OrderedDict()
_COUNT_CACHE: OrderedDict[tuple[Any, str], int] = OrderedDict()
_SMALL_CACHE_MAX = 4096


def _scan(path: str, text: str) -> list[SecretFinding]:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    key = f"{digest}:{path}"
    if key in _SCAN_CACHE:
        _SCAN_CACHE.move_to_end(key)
        return _SCAN_CACHE[key]
    found = scan_text(path, text)
    _SCAN_CACHE[key] = found
    while len(_SCAN_CACHE) > _SMALL_CACHE_MAX:
        _SCAN_CACHE.popitem(last=False)
    return found


def _memo(counter: Callable[[Any], int], digest: str, arg: Any) -> int:
    """``counter(arg)``, memoised by (counter, digest of arg) for exact tokenizers.

    An estimating backend (``EXACT_TOKEN_COUNT = False``, calibrated as the server reports
    counts) is asked every time, so a recalibrated estimate is never served stale.
    """
    owner = getattr(counter, "__self__", None)
    if owner is not None and not getattr(owner, "EXACT_TOKEN_COUNT", True):
        return int(counter(arg))
    key = (counter, digest)
    try:
        cached = _COUNT_CACHE.get(key)
    except TypeError:  # an unhashable counter: count every time
        return int(counter(arg))
    if cached is None:
        cached = int(counter(arg))
        _COUNT_CACHE[key] = cached
        while len(_COUNT_CACHE) > _SMALL_CACHE_MAX:
            _COUNT_CACHE.popitem(last=False)
    return cached


def _count(count_text: CountText, text: str) -> int:
    digest = "t:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _memo(count_text, digest, text)


def _count_messages(count_messages: CountMessages, messages: list[dict[str, str]]) -> int:
    blob = "\0".join(f"{m['role']}\0{m['content']}" for m in messages)
    digest = "m:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()
    return _memo(count_messages, digest, messages)
