"""Turning a stream of text into proposal events, the same way for every backend.

A backend only produces text deltas and a finish reason; ``ProposalStream`` does the rest:
throttled partial parses for the live file tree, early detection of degenerate repetition
(small models loop: ``health_api/health_api/...``), and the final lenient parse + pydantic
validation that turns the text into a ``Finished`` or a typed failure. Keeping it in one place
means the llama.cpp, Ollama and OpenAI-compatible backends cannot disagree about what counts
as a valid answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

import pydantic_core
from pydantic import ValidationError

from engine.core.events import (
    Finished,
    GenerationEvent,
    GenerationFailed,
    GenerationStats,
    InvalidAnswer,
    Looping,
    ProposalUpdated,
    Truncated,
)
from engine.core.models import (
    DEFAULT_MAX_FILES,
    AnswerShape,
    ChangeProposal,
    issue_rule_errors,
)


@dataclass(frozen=True)
class LoopPolicy:
    """When a repeated tail counts as a loop.

    A unit of ``p`` characters repeated back to back at the end of the text is a loop when it
    covers at least ``min_chars`` characters and repeats at least ``min_repeats`` times.
    Units made of one or two distinct characters (``====``, indentation) need ``min_chars_short``
    so that a ruler line or indentation never trips it.

    Longer units (``max_period`` < p <= ``max_long_period``: a whole function, a file entry
    written again and again) need only ``min_long_repeats`` copies: at that length an exact
    copy back to back is already a loop in code, and waiting for six would spend thousands
    of tokens.
    """

    max_period: int = 64
    min_repeats: int = 6
    min_chars: int = 160
    min_chars_short: int = 400
    max_long_period: int = 1024
    min_long_repeats: int = 4
    window: int = 4096


_NEEDLE = 32
"""Characters of the tail searched for earlier in the text to find long candidate periods."""


def _repeats(tail: str, p: int) -> int:
    """How many times the last ``p`` characters of ``tail`` repeat back to back at its end."""
    n = len(tail)
    unit = tail[n - p :]
    reps = 1
    pos = n - 2 * p
    while pos >= 0 and tail.startswith(unit, pos):
        reps += 1
        pos -= p
    return reps


def repeated_tail(text: str, policy: LoopPolicy = LoopPolicy()) -> tuple[str, int] | None:
    """The repeating unit at the end of ``text`` and its count, when it is a loop.

    Short periods are tried one by one. Long ones are found by searching the last
    ``_NEEDLE`` characters earlier in the tail (a C-speed ``rfind``): only where they recur
    can a period end, so a text without repetition costs a few searches, not a thousand
    comparisons.

    Returns:
        ``(unit, repeats)`` or ``None``.
    """
    tail = text[-policy.window :]
    n = len(tail)
    for p in range(1, min(policy.max_period, n // policy.min_repeats) + 1):
        reps = _repeats(tail, p)
        unit = tail[n - p :]
        need = policy.min_chars_short if len(set(unit)) <= 2 else policy.min_chars
        if reps >= policy.min_repeats and reps * p >= need:
            return unit, reps
    longest = min(policy.max_long_period, n // policy.min_long_repeats)
    if longest <= policy.max_period or n < 2 * _NEEDLE:
        return None
    needle = tail[n - _NEEDLE :]
    lowest = n - longest - _NEEDLE  # where a needle ending a period of `longest` starts
    end = n - 1  # search strictly before the tail's own needle
    while True:
        j = tail.rfind(needle, max(0, lowest), end)
        if j < 0:
            return None
        p = n - (j + _NEEDLE)
        if p > policy.max_period:
            unit = tail[n - p :]
            # a unit that is itself a short unit repeated was the short rules' to judge
            short = any(
                p % d == 0 and unit.startswith(unit[d:]) for d in range(1, policy.max_period + 1)
            )
            reps = 0 if short else _repeats(tail, p)
            if reps >= policy.min_long_repeats:
                return unit, reps
        end = j + _NEEDLE - 1


def describe_unit(unit: str, limit: int = 48) -> str:
    """A repeated unit for a message: quoted whole when short, else its start and length."""
    if len(unit) <= limit:
        return repr(unit)
    return f"a {len(unit)}-character block starting {unit[:limit]!r}"


def partial_parse(text: str) -> dict[str, Any] | None:
    """The object parsed so far from an incomplete JSON text (None when nothing yet)."""
    if not text.strip():
        return None
    try:
        value = pydantic_core.from_json(text, allow_partial="trailing-strings")
    except ValueError:
        try:
            value = json.loads(text, strict=False)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def json_location(partial: dict[str, Any] | None) -> str:
    """Where the writer is in a partial proposal, e.g. ``files[0].content``."""
    if not partial:
        return "(start)"
    key = list(partial)[-1]
    value = partial[key]
    if key == "files" and isinstance(value, list) and value:
        last = value[-1]
        inner = list(last)[-1] if isinstance(last, dict) and last else ""
        return f"files[{len(value) - 1}].{inner}" if inner else f"files[{len(value) - 1}]"
    return str(key)


def parse_final(text: str) -> ChangeProposal:
    """Parse a complete answer leniently (raw newlines in strings) and validate it.

    Raises:
        ValueError: not JSON.
        ValidationError: JSON, but not a ChangeProposal.
    """
    data = json.loads(text, strict=False)
    return ChangeProposal.model_validate(data)


def validation_messages(exc: ValidationError) -> tuple[str, ...]:
    """Short ``loc: msg`` lines of a pydantic error."""
    return tuple(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
    )


class ProposalStream:
    """Accumulates text deltas and emits partial-proposal and final events.

    Args:
        stats: the stats known so far (backend, model); completed by ``finish``.
        partial_interval_s: the least time between two ``ProposalUpdated`` events.
        loop_policy: when a repetition counts as a loop (``None`` disables detection).
    """

    def __init__(
        self,
        stats: GenerationStats | None = None,
        *,
        partial_interval_s: float = 0.1,
        loop_policy: LoopPolicy | None = LoopPolicy(),
        loop_check_every: int = 16,
        max_files: int = DEFAULT_MAX_FILES,
        issue_number: int | None = None,
        shape: AnswerShape | None = None,
    ) -> None:
        self.max_files = max_files
        self.issue_number = issue_number
        self.shape = shape
        self.text = ""
        self.stats = stats or GenerationStats()
        self._interval = partial_interval_s
        self._last_partial = 0.0
        self._loop_policy = loop_policy
        self._loop_every = loop_check_every
        self._since_loop_check = 0
        self.loop: Looping | None = None

    def feed(self, delta: str) -> list[GenerationEvent]:
        """Add text; returns a ``ProposalUpdated`` when due. Sets ``self.loop`` on a loop."""
        self.text += delta
        events: list[GenerationEvent] = []
        self._since_loop_check += len(delta)
        if self._loop_policy is not None and self._since_loop_check >= self._loop_every:
            self._since_loop_check = 0
            found = repeated_tail(self.text, self._loop_policy)
            if found is not None:
                unit, reps = found
                partial = partial_parse(self.text)
                where = json_location(partial)
                self.loop = Looping(
                    message=f"the model repeated {describe_unit(unit)} {reps} times in "
                    f"{where}; stopped",
                    hint="try again: a retry samples with a new seed and a small "
                    "temperature; DRY sampling (dry_multiplier in the model profile) stops "
                    "repeats as they start; a larger model helps most",
                    partial=partial,
                    raw=self.text,
                    where=where,
                )
        now = time.monotonic()
        if now - self._last_partial >= self._interval:
            self._last_partial = now
            partial = partial_parse(self.text)
            if partial is not None:
                events.append(ProposalUpdated(partial))
        return events

    def rewind(self, chars: int) -> None:
        """Take ``chars`` characters back from the end (the engine rewound the answer)."""
        if chars > 0:
            self.text = self.text[: max(len(self.text) - chars, 0)]

    def finish(self, finish_reason: str, stats: GenerationStats) -> GenerationEvent:
        """The final event for a stream that ended with ``finish_reason``.

        ``stop`` means the backend says the answer is complete: it is validated. ``length``
        (token budget) and ``context`` give ``Truncated``; a detected loop gives ``Looping``.
        """
        stats = replace(stats, finish_reason=finish_reason)
        partial = partial_parse(self.text)
        if self.loop is not None:
            return replace(self.loop, stats=replace(stats, finish_reason="loop"))
        if finish_reason in ("length", "context"):
            limit = "max_tokens" if finish_reason == "length" else "n_ctx"
            return Truncated(
                message=f"the answer hit the {limit} limit after {stats.completion_tokens} "
                "tokens before the JSON closed",
                hint=f"raise {limit} in the model profile, or ask for a smaller change",
                partial=partial,
                raw=self.text,
                stats=stats,
                limit=limit,
            )

        def invalid(errors: tuple[str, ...], hint: str) -> InvalidAnswer:
            return InvalidAnswer(
                message=f"the answer of {stats.backend or 'the backend'} "
                f"({stats.model or 'model'}) is not a valid proposal: {errors[0]}",
                hint=hint,
                partial=partial,
                raw=self.text,
                stats=stats,
                errors=errors,
            )

        try:
            proposal = parse_final(self.text)
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                errors = validation_messages(exc)
            else:
                errors = (f"not valid JSON: {exc}",)
            return invalid(
                errors,
                "the server may have ignored the JSON schema; see the backend's docs on "
                "structured output",
            )
        if len(proposal.files) > self.max_files:
            # a server that ignored the schema (the grammar bounds files by max_files)
            return invalid(
                (f"files: {len(proposal.files)} files; the limit is {self.max_files}",),
                "ask for a smaller change, or raise [generation] max_files",
            )
        if self.issue_number is not None:
            broken = issue_rule_errors(proposal, self.issue_number, self.shape)
            if broken:
                # a server that ignored the per-issue schema (the grammar enforces these)
                return invalid(
                    broken,
                    "the server may have ignored the JSON schema's patterns; see the "
                    "backend's docs on structured output",
                )
        return Finished(proposal=proposal, stats=stats, raw=self.text)


def is_final(event: GenerationEvent) -> bool:
    """Whether ``event`` ends a stream."""
    return isinstance(event, Finished | GenerationFailed)
