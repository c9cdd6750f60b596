"""Sorting and fuzzy-filtering a list of issues, fast enough to run on every keystroke.

Why here and not in the TUI: the same filter serves the Issues screen and scripts, and it is
the part that must stay fast (10,000 issues within a few milliseconds per keystroke). Each
issue's searchable text is lowered once; a query whose text extends the previous one (the user
typing) only re-checks the previous matches, because every rule below only narrows.

A query is whitespace-separated terms, all of which must match (AND). A term matches an issue
when it is a substring of its title, labels or body (case-insensitive), or when its letters
appear in order in the title (``hlth`` finds "Add a /health endpoint"). ``#12`` (or ``12``)
also matches issue numbers starting with 12.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Generic, Literal, Protocol, TypeVar


class IssueLike(Protocol):
    """What sorting and filtering read of an issue: ``engine.core.models.Issue``, or the plain
    rows of the TUI's first frame (``engine.issues.forge.firstframe.CachedIssue``, read before
    pydantic is imported)."""

    @property
    def number(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def comments(self) -> int: ...
    @property
    def updated_at(self) -> datetime | None: ...


IssueT = TypeVar("IssueT", bound=IssueLike)
SortKey = Literal["updated", "number", "comments", "title"]
SORT_KEYS: tuple[SortKey, ...] = ("updated", "number", "comments", "title")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def sort_issues(issues: Sequence[IssueT], key: SortKey = "updated") -> list[IssueT]:
    """``issues`` sorted by ``key``: newest update, highest number, most comments first; titles
    A to Z. Ties keep the higher number first, so the order is total and stable.

    Args:
        issues: any issues.
        key: one of ``SORT_KEYS``.

    Returns:
        A new sorted list.
    """
    if key == "title":
        return sorted(issues, key=lambda i: (i.title.lower(), -i.number))
    if key == "number":
        return sorted(issues, key=lambda i: -i.number)
    if key == "comments":
        return sorted(issues, key=lambda i: (-i.comments, -i.number))

    def updated(issue: IssueT) -> tuple[float, int]:
        when = issue.updated_at or _EPOCH
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return (-when.timestamp(), -issue.number)

    return sorted(issues, key=updated)


class IssueFilter(Generic[IssueT]):
    """A precomputed search index over ``issues`` (in their given order).

    Args:
        issues: the issues, already in display order.
    """

    def __init__(self, issues: Sequence[IssueT]) -> None:
        self.issues = list(issues)
        # built by ``prepare`` or the first query, not here: an empty query (the list as it
        # is first shown) needs none of it (~2 ms of the TUI's first frame for 1,000 issues)
        self._index: tuple[list[str], list[str], list[str]] | None = None
        self._last_query = ""
        self._last_result: list[int] = list(range(len(self.issues)))

    def __len__(self) -> int:
        return len(self.issues)

    def prepare(self) -> None:
        """Build the search index now (a UI calls it once the list is painted, so the first
        keystroke does not pay for it: ~20 ms for 10,000 issues)."""
        self._lowered()

    def _lowered(self) -> tuple[list[str], list[str], list[str]]:
        """Each issue's lowered title, searchable text (title, labels, body) and number."""
        if self._index is None:
            issues = self.issues
            self._index = (
                [i.title.lower() for i in issues],
                [f"{i.title}\n{' '.join(i.labels)}\n{i.body}".lower() for i in issues],
                [str(i.number) for i in issues],
            )
        return self._index

    def _term_matches(self, term: str, candidates: list[int]) -> list[int]:
        titles, hay, numbers = self._lowered()
        digits = term.lstrip("#")
        is_number = digits.isdigit()
        if term.startswith("#") and is_number:
            return [i for i in candidates if numbers[i].startswith(digits)]
        fuzzy = re.compile(".*?".join(re.escape(c) for c in term)) if len(term) > 1 else None
        out = []
        for i in candidates:
            if term in hay[i]:
                out.append(i)
            elif is_number and numbers[i].startswith(digits):
                out.append(i)
            elif fuzzy is not None and fuzzy.search(titles[i]) is not None:
                out.append(i)
        return out

    def filter(self, query: str) -> list[int]:
        """Indices (into ``issues``) of the issues matching ``query``, in display order.

        Args:
            query: whitespace-separated terms; empty matches everything.

        Returns:
            Ascending indices.
        """
        q = query.lower()
        if not q.strip():
            result = list(range(len(self.issues)))
        else:
            if self._last_query and q.startswith(self._last_query):
                candidates = self._last_result  # every rule only narrows as the text grows
            else:
                candidates = list(range(len(self.issues)))
            result = candidates
            for term in q.split():
                if term == "#":
                    continue  # the start of a number search: matches everything so far
                result = self._term_matches(term, result)
                if not result:
                    break
        self._last_query = q
        self._last_result = result
        return result
