"""One base for the backends that stream from a model server (Ollama, OpenAI-compatible).

Why one base: both servers stream text chunks of a proposal, and everything around the wire
is the same: the prompt is estimated and refused before sending when it cannot fit
(``PromptTooLong``), each chunk with text yields ``PromptProcessed`` once, ``TokensGenerated``
and the proposal's own events, the stream is stopped early on a loop or an answer that is not
a JSON object, and a stream ends the same ways (unreachable, broken half way, cancelled, cut
prompt, the final answer judged). ``ServerBackend`` owns that loop, the stats and the
failure endings; a subclass keeps only its wire: the request, how a chunk is read, its
endpoints and its error shapes.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from engine.core.errors import BackendError
from engine.core.events import (
    BackendFailed,
    GenerationEvent,
    GenerationStats,
    InvalidAnswer,
    PromptProcessed,
    PromptTooLong,
    PromptTruncated,
    TokensGenerated,
)
from engine.generate.backends.base import Backend, GenerationRequest, P
from engine.generate.backends.http import (
    CancellableStream,
    RetryPolicy,
    cut_short,
    is_connect_error,
    stop_reading_answer,
)
from engine.generate.stream import ProposalStream, partial_parse
from engine.generate.tokens import TokenCalibration, prompt_was_cut


@dataclass
class StreamRun:
    """One generation against a server: its clock, its counts and the answer so far.

    Every ending of the stream reads these (``stats_now``); a backend subclasses it to keep
    what its wire reports along the way (the final chunk, ``usage``, the format flavour).
    """

    request: GenerationRequest
    base: GenerationStats
    max_tokens: int
    t0: float = field(default_factory=time.monotonic)
    expected: int = 0
    """The estimated prompt tokens (set before the request is sent)."""
    first_at: float | None = None
    chunks: int = 0
    proposal: ProposalStream = field(init=False)

    def __post_init__(self) -> None:
        self.proposal = ProposalStream(
            self.base,
            max_files=self.request.max_files,
            issue_number=self.request.issue_number,
            shape=self.request.shape,
        )

    def stats_now(self, reason: str) -> GenerationStats:
        """The stats of the stream so far, ending with ``reason``."""
        now = time.monotonic()
        first_at, chunks = self.first_at, self.chunks
        decode = now - first_at if first_at is not None else 0.0
        return replace(
            self.base,
            prompt_tokens=self.expected,
            completion_tokens=chunks,
            ttft_s=(first_at - self.t0) if first_at is not None else 0.0,
            elapsed_s=now - self.t0,
            tokens_per_s=(chunks - 1) / decode if decode > 0 and chunks > 1 else 0.0,
            finish_reason=reason,
        )

    def feed(self, text: str) -> Iterator[GenerationEvent]:
        """The events of one chunk of answer ``text`` (not empty)."""
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            yield PromptProcessed(
                prompt_tokens=self.expected, cached_prompt_tokens=0, seconds=now - self.t0
            )
        self.chunks += 1
        decode = now - self.first_at
        yield TokensGenerated(
            text=text,
            completion_tokens=self.chunks,
            tokens_per_s=(self.chunks - 1) / decode if decode > 0 else 0.0,
            elapsed_s=now - self.t0,
        )
        yield from self.proposal.feed(text)

    def stop_reading(self) -> bool:
        """Whether the answer so far is a loop or can never be a proposal (stop the stream)."""
        return self.proposal.loop is not None or stop_reading_answer(self.proposal.text)


R = TypeVar("R", bound=StreamRun)
C = TypeVar("C")


class ServerBackend(Backend[P], Generic[P, R, C]):
    """A backend that streams chunks of type ``C`` from a server, one ``R`` per generation.

    Args:
        name: the profile's name.
        profile: the server profile.
        retry: how connect failures are retried (never a half-streamed generation).
    """

    CAN_CANCEL = True
    CONCURRENT = True
    PREFIX_CACHE = True
    EXACT_TOKEN_COUNT = False
    """An estimate calibrated by the server's counts (no client-side tokenizer)."""

    def __init__(self, name: str, profile: P, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(name, profile)
        self.retry = retry or RetryPolicy()
        self.calibration = TokenCalibration()

    # -- counting ---------------------------------------------------------------------------

    def count_text(self, text: str) -> int:
        """Estimated tokens of ``text`` (calibrated by the server's counts)."""
        return self.calibration.text_tokens(text)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Estimated tokens of the chat prompt of ``messages``, template overhead included."""
        return self.calibration.chat_tokens(messages)

    # -- the wire: what a subclass says -----------------------------------------------------

    @property
    @abstractmethod
    def server(self) -> str:
        """How messages name the server (``Ollama at http://...`` or the base URL)."""

    @abstractmethod
    def _unreachable(self, exc: BaseException) -> BackendError:
        """The error of a server that could not be connected to."""

    @abstractmethod
    def _take(self, run: R, chunk: C) -> str:
        """Record what ``chunk`` reports on ``run``; returns its answer text ('' for none)."""

    @abstractmethod
    def _invalid(self, result: InvalidAnswer, run: R) -> InvalidAnswer:
        """``result`` naming the model and the likely cause on this server."""

    @abstractmethod
    def _truncated(self, run: R, stats: GenerationStats, evaluated: int) -> PromptTruncated:
        """The ending of an answer for which the server evaluated only ``evaluated`` tokens."""

    def _scrub(self, text: str) -> str:
        """``text`` fit to show (a subclass removes its credentials)."""
        return text

    def _reopen(self, exc: Exception, run: R) -> bool:
        """Whether ``exc`` asks for the request again in another form (nothing was streamed)."""
        return False

    def _wire_failure(self, exc: Exception, run: R) -> GenerationEvent | None:
        """The ending for an error of this server's wire, or None for the common ones."""
        return None

    # -- the endings ------------------------------------------------------------------------

    def _failed(self, exc: BackendError, run: StreamRun) -> BackendFailed:
        """A failure before any answer (unreachable, refused): elapsed time only."""
        return BackendFailed(
            message=exc.message,
            hint=exc.hint,
            stats=replace(run.base, finish_reason="error", elapsed_s=time.monotonic() - run.t0),
        )

    def _broken(self, message: str, run: StreamRun) -> BackendFailed:
        """A failure after part of the answer was streamed: the partial answer goes along."""
        text = run.proposal.text
        return BackendFailed(
            message=message,
            hint="check the server's log; regenerate when it is healthy",
            partial=partial_parse(text),
            raw=text,
            stats=run.stats_now("error"),
        )

    def _too_long(self, run: R, n_ctx: int, capped: str, hint: str) -> PromptTooLong | None:
        """Estimate the prompt (``run.expected``); ``PromptTooLong`` when it cannot fit."""
        expected = run.expected = self.count_tokens(run.request.messages)
        if expected + run.max_tokens <= n_ctx:
            return None
        return PromptTooLong(
            message=f"the prompt takes about {expected} tokens (estimated) and the answer "
            f"needs {run.max_tokens}: more than the context of {n_ctx}{capped}",
            hint=hint,
            stats=replace(run.base, prompt_tokens=expected, finish_reason="error"),
            prompt_tokens=expected,
            n_ctx=n_ctx,
            reserved=run.max_tokens,
        )

    def _read(self, run: R, reader: CancellableStream[C]) -> Generator[GenerationEvent, None, str]:
        """Stream the events of ``reader``'s chunks.

        Returns:
            ``"read"`` when the stream ended or was stopped, ``"failed"`` when its ending
            was yielded, ``"reopen"`` when the request should be sent again (``_reopen``).
        """
        try:
            for chunk in reader:
                text = self._take(run, chunk)
                if not text:
                    continue
                yield from run.feed(text)
                if run.stop_reading():
                    reader.close()
                    break
        except Exception as exc:
            if self._reopen(exc, run):
                return "reopen"
            ending = self._wire_failure(exc, run)
            if ending is None and is_connect_error(exc):
                ending = self._failed(self._unreachable(exc), run)
            if ending is None:
                ending = self._broken(
                    f"the stream from {self.server} broke after {run.chunks} chunks "
                    f"({type(exc).__name__}: {self._scrub(str(exc))}); not retried, the "
                    "answer was half streamed",
                    run,
                )
            yield ending
            return "failed"
        finally:
            reader.close()
        return "read"

    def _cut_short(self, run: R, cancelled: bool) -> GenerationEvent | None:
        """The ending of a stream cancelled, not a JSON object, or looping; else None."""
        short = cut_short(run.proposal.text, cancelled, run.chunks, run.stats_now)
        if short is not None:
            return self._invalid(short, run) if isinstance(short, InvalidAnswer) else short
        if run.proposal.loop is not None:
            return run.proposal.finish("loop", run.stats_now("loop"))
        return None

    def _answer(
        self, run: R, stats: GenerationStats, evaluated: int | None, reason: str
    ) -> GenerationEvent:
        """The ending of a whole answer: a cut prompt, else the proposal judged.

        ``evaluated`` (the server's prompt count) calibrates the estimate when the prompt
        was whole.
        """
        if prompt_was_cut(run.expected, evaluated, self.calibration.tolerance):
            assert evaluated is not None
            return self._truncated(run, stats, evaluated)
        if evaluated:
            self.calibration.observe(run.request.messages, evaluated)
        result = run.proposal.finish(reason, stats)
        if isinstance(result, InvalidAnswer):
            return self._invalid(result, run)
        return result

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        """Stream the events of one generation (see ``Backend.generate``)."""
        run = self._new_run(request, request.max_tokens or self.profile.max_tokens)
        yield from self._generate(run, cancel or threading.Event())

    @abstractmethod
    def _new_run(self, request: GenerationRequest, max_tokens: int) -> R:
        """The state of one generation (the clock starts here)."""

    @abstractmethod
    def _generate(self, run: R, cancel: threading.Event) -> Iterator[GenerationEvent]:
        """The generation of ``run``: preflight, the request, ``_read``, the ending."""


__all__ = ["ServerBackend", "StreamRun"]
