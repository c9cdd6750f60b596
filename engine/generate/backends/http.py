"""HTTP plumbing shared by the server backends (Ollama, OpenAI-compatible).

Why one place: both backends must behave the same on a flaky network. A connection that
cannot be *established* is retried with backoff (nothing was sent, so nothing is repeated);
anything that fails after the request went out is reported, never retried, because a
generation that was half streamed must not be silently started again. Cancellation must end
the stream within a fraction of a second even while the reader is blocked waiting for the
server's next chunk, so the blocking read runs in a thread and a set ``threading.Event``
stops the consumer at once and shuts the socket down under the reader.
"""

from __future__ import annotations

import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from engine.core.events import Cancelled, GenerationStats, InvalidAnswer
from engine.generate.stream import partial_parse

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a connection that could not be established."""

    attempts: int = 3
    backoff_s: float = 0.25
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """The waits between attempts (``attempts - 1`` of them)."""
        delay = self.backoff_s
        for _ in range(self.attempts - 1):
            yield delay
            delay *= self.factor


def http_timeout(read_s: float, connect_s: float = 5.0) -> httpx.Timeout:
    """A timeout that fails fast on connect but waits ``read_s`` between streamed chunks.

    A slow model may think for minutes before its first token (prompt processing), so the
    read timeout is the profile's, while an unreachable host is noticed in seconds.
    """
    return httpx.Timeout(connect=connect_s, read=read_s, write=30.0, pool=read_s)


def is_connect_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection was never established (safe to retry).

    ``httpx.ConnectError``/``ConnectTimeout`` are raised before any byte is sent; the
    ``ollama`` client turns ``httpx.ConnectError`` into a bare builtin ``ConnectionError``.
    A reset or a broken pipe (subclasses of ``ConnectionError``) may come after the request
    was sent, so they do not count.
    """
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | ConnectionRefusedError):
        return True
    return type(exc) is ConnectionError


def open_with_retry(
    open_stream: Callable[[], Iterator[T]],
    policy: RetryPolicy,
    cancel: threading.Event | None = None,
) -> Iterator[T]:
    """Open a lazy stream, retrying only while the connection cannot be established.

    The stream is primed (its first item read) inside the retry loop because lazy clients
    (the ``ollama`` generator) connect on the first ``next``; no item has reached the caller
    yet at that point, so a retry cannot repeat anything the caller saw.

    Args:
        open_stream: makes a new iterator (a new request) on each call.
        policy: attempts and backoff.
        cancel: stops waiting between attempts.

    Returns:
        An iterator yielding the first item and the rest.

    Raises:
        Exception: the last connect error, or any other error at once.
    """
    delays = policy.delays()
    while True:
        stream = open_stream()
        try:
            first = next(stream)
        except StopIteration:
            return iter(())
        except Exception as exc:
            if not is_connect_error(exc):
                raise
            delay = next(delays, None)
            if delay is None or (cancel is not None and cancel.is_set()):
                raise
            if cancel is not None:
                cancel.wait(delay)
            else:
                time.sleep(delay)
            continue
        return _chain(first, stream)


def _chain(first: T, rest: Iterator[T]) -> Iterator[T]:
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


def shutdown_socket(response: httpx.Response | None) -> None:
    """Shut down the socket under a streaming ``response`` from any thread.

    ``shutdown`` (unlike ``close``) wakes a thread blocked in ``recv`` on the same socket,
    and the server sees the client go away at once, so it stops generating.
    """
    if response is None:
        return
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class CancellableStream(Generic[T]):
    """Reads a blocking iterator in a thread so that a cancel ends consumption at once.

    Args:
        open_stream: makes the iterator; called in the reader thread (its connect errors
            and HTTP errors are re-raised to the consumer).
        cancel: when set, iteration stops within ``poll_s`` and ``cancelled`` is true.
        on_close: called once when reading stops early (cancel, loop, consumer gone),
            e.g. ``shutdown_socket`` of the response, so the reader thread wakes and closes
            the stream.
        poll_s: how often the consumer looks at ``cancel`` while waiting.
    """

    def __init__(
        self,
        open_stream: Callable[[], Iterator[T]],
        cancel: threading.Event | None,
        *,
        on_close: Callable[[], None] | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self._open = open_stream
        self._cancel = cancel or threading.Event()
        self._on_close = on_close
        self._poll = poll_s
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.cancelled = False
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="stream-reader", daemon=True)

    def _read(self) -> None:
        stream: Iterator[T] | None = None
        try:
            if self._stop.is_set():  # cancelled before the request went out
                return
            stream = self._open()
            for item in stream:
                if self._stop.is_set():
                    break
                self._queue.put(("item", item))
        except BaseException as exc:  # handed to the consumer, which decides
            if not self._stop.is_set():
                self._queue.put(("error", exc))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            self._queue.put(("end", None))

    def __iter__(self) -> Iterator[T]:
        self._thread.start()
        ended = False
        try:
            while True:
                if self._cancel.is_set():
                    self.cancelled = True
                    return
                try:
                    kind, value = self._queue.get(timeout=self._poll)
                except queue.Empty:
                    continue
                if kind == "item":
                    yield value
                elif kind == "error":
                    ended = True
                    raise value
                else:
                    ended = True
                    return
        finally:
            if not ended:
                self.close()

    def close(self) -> None:
        """Stop reading and drop the connection (cancelled, a loop, or the consumer left)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception:
                pass

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reader thread to finish (tests; shutdown)."""
        if self._thread.is_alive():
            self._thread.join(timeout)


#: Characters of an answer that is not a JSON object read before the stream is stopped: enough
#: to show what the model wrote instead, without waiting for ``max_tokens`` of it.
NOT_JSON_PREVIEW_CHARS = 80


def not_a_json_object(text: str) -> str | None:
    """Why the answer ``text`` can never become a proposal, or ``None`` while it still can.

    An answer held to the proposal schema starts with ``{`` (after whitespace), and the final
    parse accepts nothing else, so any other start means the server dropped the constraint
    (free text, a Markdown fence, an array): waiting for the rest, or calling it truncated or
    looping, would only hide that.
    """
    stripped = text.lstrip()
    if not stripped or stripped.startswith("{"):
        return None
    start = " ".join(stripped[:40].split())
    return f"not a JSON object: the answer starts with {start!r}"


def cut_short(
    text: str, cancelled: bool, tokens: int, stats_now: Callable[[str], GenerationStats]
) -> Cancelled | InvalidAnswer | None:
    """The final event of a server stream that ended before its answer could be judged.

    Cancelled by the user, or not a JSON object at all (the server dropped the schema):
    both server backends end these the same way; None lets the caller validate the answer.
    """
    if cancelled:
        return Cancelled(
            message=f"cancelled after {tokens} tokens",
            partial=partial_parse(text),
            raw=text,
            stats=stats_now("cancelled"),
        )
    not_json = not_a_json_object(text)
    if not_json is not None:
        return InvalidAnswer(
            message=not_json, raw=text, stats=stats_now("error"), errors=(not_json,)
        )
    return None


_LEADING_SPACE = re.compile(r"\s*")


def stop_reading_answer(text: str) -> bool:
    """Whether enough of a non-JSON answer was read to stop the stream (see the preview).

    Called after every chunk with the whole answer so far: it looks only at the start (and,
    for a non-JSON answer, at the few characters read before it stops), never copies the text.
    """
    start = _LEADING_SPACE.match(text)
    first = start.end() if start is not None else 0
    if first == len(text) or text[first] == "{":
        return False  # nothing yet, or a JSON object: the schema is being followed
    return text[first + NOT_JSON_PREVIEW_CHARS - 1 :].strip() != ""


@dataclass
class ServerProbe:
    """What a model server says about itself and a profile's model (``agent-tui doctor``)."""

    url: str
    reachable: bool
    error: str = ""
    hint: str = ""
    model: str = ""
    model_present: bool | None = None
    """``None`` when the server could not be asked."""
    models: list[str] | None = None
    """The models the server has (pulled or served)."""
    context_length: int | None = None
    """The model's largest context, as the server reports it."""
    loaded_context: int | None = None
    """The context the model is loaded with right now (Ollama ``ps``)."""
    gpu: str = ""
    """How much of the model is on the GPU, when the server tells."""
    served_model: str = ""
    """The model a single-model server (llama-server) answers with whatever name is asked
    (``model`` is then only a label); empty otherwise."""
    notes: list[str] | None = None
