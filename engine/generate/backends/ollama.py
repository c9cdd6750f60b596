"""The Ollama backend: a model served by an Ollama server, through the ``ollama`` client.

Why the care around the prompt: Ollama's default context is small and, when a prompt does not
fit the context it runs with, it cuts the prompt and answers anyway. A proposal written
without the issue text or the files it changes looks plausible and is wrong, so this backend

* always sends ``num_ctx`` (from the profile) and ``num_predict`` (the output budget);
* reads the model's context length (``show``) before sending, and the context the model is
  loaded with (``ps``) once one of its own requests has run, and refuses a prompt that does
  not fit (``PromptTooLong``);
* compares the server's ``prompt_eval_count`` (with the prefix cache's
  ``prompt_eval_cached_count`` where the server left the cached tokens out of it) with the
  count it expected after the answer, and reports ``PromptTruncated`` with both numbers
  instead of passing the answer on.

The exact tokenizer of an arbitrary Ollama model is not available client-side (Ollama has no
tokenize endpoint), so ``count_tokens`` is an estimate: ``EXACT_TOKEN_COUNT`` is ``False``.
It starts from a documented ratio of characters per token and is calibrated by every count
the server reports for this model (see ``TokenCalibration``), so the truncation check is
loose on the first request and strict after that.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import ollama

from engine.core.config import OllamaProfile
from engine.core.errors import BackendError
from engine.core.events import (
    GenerationEvent,
    GenerationStats,
    InvalidAnswer,
    PromptTruncated,
)
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.http import (
    CancellableStream,
    RetryPolicy,
    ServerProbe,
    http_timeout,
    is_connect_error,
    open_with_retry,
    shutdown_socket,
)
from engine.generate.backends.server import ServerBackend, StreamRun
from engine.generate.stream import partial_parse

DEFAULT_HOST = "http://127.0.0.1:11434"
#: The longest wait for the next streamed chunk (prompt processing of a long prompt on a
#: CPU can take minutes before the first token).
READ_TIMEOUT_S = 600.0
#: ``num_gpu`` sent for ``n_gpu_layers = -1`` (every layer): Ollama's own idiom for "all".
ALL_GPU_LAYERS = 999


def ollama_host(profile: OllamaProfile) -> str:
    """The server URL: the profile's ``host``, else ``$OLLAMA_HOST``, else the default port."""
    host = profile.host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    if "://" not in host:
        host = "http://" + host
    return host.rstrip("/")


def _full_tag(model: str) -> str:
    return model if ":" in model else model + ":latest"


#: The final chunk's count of prompt tokens reused from the prefix cache (Ollama 0.12+; the
#: ``ollama`` client's ``ChatResponse`` does not declare it, so it is read off the raw body).
CACHED_COUNT_FIELD = "prompt_eval_cached_count"


def prompt_eval_total(count: int | None, cached: int | None) -> int | None:
    """The prompt's size from the final chunk's ``prompt_eval_count`` and cached count.

    Ollama counts the cached tokens in ``prompt_eval_count`` (its cached count says how many of
    them came from the cache), so the count alone is the prompt. A build that reports only the
    newly evaluated tokens (llama-server's ``prompt_n`` passed through) shows it with a cached
    count larger than the count, which a count that includes the cache cannot be; there the two
    are added, so a cache hit is not taken for a cut prompt. A smaller cached count is read the
    way Ollama defines it: adding it anyway would double-count every ordinary answer and let a
    cut prompt sent again (its kept part now cached) pass as whole.
    """
    if cached and cached > (count or 0):
        return (count or 0) + cached
    return count


class _CachedCountTee(httpx.SyncByteStream):
    """Passes a streamed ``/api/chat`` body through and records its cached prompt count.

    Only a line that names the field is parsed (the final one), so the stream costs a substring
    search per line. A compressed body (a proxy's gzip) is not read: the count stays unknown.
    """

    _NEEDLE = CACHED_COUNT_FIELD.encode()

    def __init__(self, stream: httpx.SyncByteStream, found: dict[str, int]) -> None:
        self._stream = stream
        self._found = found
        self._tail = b""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            self._scan(chunk)
            yield chunk
        self._scan(b"\n")

    def _scan(self, chunk: bytes) -> None:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if self._NEEDLE not in line:
                continue
            try:
                value = json.loads(line).get(CACHED_COUNT_FIELD)
            except (ValueError, AttributeError):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                self._found[CACHED_COUNT_FIELD] = value

    def close(self) -> None:
        self._stream.close()


@dataclass(frozen=True)
class OllamaModelInfo:
    """What ``show`` says about the model."""

    context_length: int | None
    """The model's trained context (``<arch>.context_length``)."""
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""


@dataclass
class _OllamaRun(StreamRun):
    """One generation against Ollama: what its stream reports besides the text."""

    final: ollama.ChatResponse | None = None
    """The chunk with ``done`` set (its counts and ``done_reason``)."""
    counts: dict[str, int] = field(default_factory=dict)
    """The cached prompt count read off the raw body (``_CachedCountTee``)."""


class OllamaBackend(ServerBackend[OllamaProfile, _OllamaRun, ollama.ChatResponse]):
    """Streams a proposal from an Ollama server with ``format=<the proposal schema>``.

    Args:
        name: the profile's name.
        profile: the Ollama profile.
        retry: how connect failures are retried (never a half-streamed generation).
    """

    kind = "ollama"
    CONCURRENT = True
    """Ollama queues concurrent requests and runs ``OLLAMA_NUM_PARALLEL`` of them at once."""
    PREFIX_CACHE = True
    """Ollama keeps the KV cache of the previous prompt and reuses a shared prefix."""

    def __init__(
        self, name: str, profile: OllamaProfile, *, retry: RetryPolicy | None = None
    ) -> None:
        super().__init__(name, profile, retry=retry)
        self.host = ollama_host(profile)
        self._info: OllamaModelInfo | None = None
        self._info_lock = threading.Lock()
        self._sent = False
        """Whether a chat request of this backend (with its ``num_ctx``) reached the server."""
        self._client = ollama.Client(host=self.host, timeout=http_timeout(30.0))

    @property
    def server(self) -> str:
        return f"Ollama at {self.host}"

    # -- preflight --------------------------------------------------------------------------

    def _unreachable(self, exc: BaseException | None = None) -> BackendError:
        detail = f" ({exc})" if exc is not None and not isinstance(exc, ConnectionError) else ""
        return BackendError(
            f"Ollama is not reachable at {self.host}{detail}",
            hint="start it with `ollama serve` (or set host / $OLLAMA_HOST in the profile)",
            title="Ollama not reachable",
        )

    def _not_pulled(self) -> BackendError:
        return BackendError(
            f"the model {self.profile.model!r} is not pulled on the Ollama server at {self.host}",
            hint=f"run `ollama pull {self.profile.model}`",
            title="Ollama model missing",
        )

    def _call(self, fn: Any, *args: Any) -> Any:
        """One non-streamed client call, retried on connect errors; typed errors."""
        delays = self.retry.delays()
        while True:
            try:
                return fn(*args)
            except ollama.ResponseError as exc:
                if exc.status_code == 404:
                    raise self._not_pulled() from None
                raise BackendError(
                    f"Ollama at {self.host} answered HTTP {exc.status_code}: {exc.error}",
                    title="Ollama error",
                ) from None
            except (httpx.HTTPError, ConnectionError) as exc:
                delay = next(delays, None) if is_connect_error(exc) else None
                if delay is None:
                    raise self._unreachable(exc) from None
                time.sleep(delay)

    def model_info(self, refresh: bool = False) -> OllamaModelInfo:
        """The model's details from ``show`` (cached for the backend's life).

        Raises:
            BackendError: server not reachable, model not pulled, or an HTTP error.
        """
        with self._info_lock:
            if self._info is not None and not refresh:
                return self._info
        shown = self._call(self._client.show, self.profile.model)
        info_map: dict[str, Any] = dict(shown.modelinfo or {})
        context = None
        for key, value in info_map.items():
            if key.endswith(".context_length") and isinstance(value, int):
                context = value
                break
        details = shown.details
        info = OllamaModelInfo(
            context_length=context,
            family=(details.family or "") if details else "",
            parameter_size=(details.parameter_size or "") if details else "",
            quantization=(details.quantization_level or "") if details else "",
        )
        with self._info_lock:
            self._info = info
        return info

    def loaded(self) -> ollama.ProcessResponse.Model | None:
        """The model's entry in ``ps`` (loaded context, VRAM), or ``None`` when not loaded.

        Raises:
            BackendError: server not reachable.
        """
        running = self._call(self._client.ps)
        tag = _full_tag(self.profile.model)
        for entry in running.models:
            if tag in (entry.model, entry.name) or self.profile.model in (entry.model, entry.name):
                return entry
        return None

    def effective_context(self, info: OllamaModelInfo) -> int:
        """The context the server will run with: ``n_ctx``, capped by the model's own."""
        if info.context_length and info.context_length < self.profile.n_ctx:
            return info.context_length
        return self.profile.n_ctx

    def loaded_context(self) -> int | None:
        """The context the model is loaded with (``ps``) once this backend's ``num_ctx`` was
        sent, else ``None``.

        Before this backend's first request a loaded model may be another client's, and Ollama
        reloads it with the ``num_ctx`` a request sends; after it, a smaller loaded context
        means the server does not honour ``num_ctx`` and would cut a longer prompt. A server
        that cannot answer ``ps`` is not a reason to refuse: the answer's count is checked.
        """
        if not self._sent:
            return None
        try:
            entry = self.loaded()
        except BackendError:
            return None
        return entry.context_length if entry is not None and entry.context_length else None

    def probe(self) -> ServerProbe:
        """Reachable? Model pulled? Context length, loaded context, GPU share (for doctor)."""
        probe = ServerProbe(url=self.host, reachable=False, model=self.profile.model)
        try:
            tags = self._call(self._client.list)
        except BackendError as exc:
            probe.error, probe.hint = exc.message, exc.hint
            return probe
        probe.reachable = True
        names = [m.model for m in tags.models if m.model]
        probe.models = names
        probe.model_present = self.profile.model in names or _full_tag(self.profile.model) in names
        if not probe.model_present:
            probe.hint = f"run `ollama pull {self.profile.model}`"
            return probe
        notes: list[str] = []
        try:
            info = self.model_info(refresh=True)
            probe.context_length = info.context_length
            if info.context_length and info.context_length < self.profile.n_ctx:
                notes.append(
                    f"n_ctx={self.profile.n_ctx} is larger than the model's context "
                    f"({info.context_length}); the server caps it"
                )
            entry = self.loaded()
        except BackendError as exc:
            probe.error, probe.hint = exc.message, exc.hint
            return probe
        if entry is not None:
            probe.loaded_context = entry.context_length
            size, vram = int(entry.size or 0), int(entry.size_vram or 0)
            if size:
                probe.gpu = f"{round(100 * vram / size)}% of {size / 1e9:.1f} GB in GPU memory"
        if self.profile.n_gpu_layers is not None:
            notes.append(f"num_gpu={self._num_gpu()} sent")
        probe.notes = notes
        return probe

    # -- generation -------------------------------------------------------------------------

    def _num_gpu(self) -> int | None:
        layers = self.profile.n_gpu_layers
        if layers is None:
            return None
        return ALL_GPU_LAYERS if layers == -1 else layers

    def options(self, max_tokens: int, request: GenerationRequest | None = None) -> dict[str, Any]:
        """The ``options`` of a chat request: ``num_ctx`` and ``num_predict`` always.

        Ollama has no DRY sampler (its options do not include one), so the profile's DRY
        settings are not sent; ``repeat_penalty`` is its tool against loops.
        """
        p = self.profile
        temperature = p.temperature
        seed = p.seed
        if request is not None and request.temperature is not None:
            temperature = request.temperature
        if request is not None and request.seed is not None:
            seed = request.seed
        opts: dict[str, Any] = {
            "num_ctx": p.n_ctx,
            "num_predict": max_tokens,
            "temperature": temperature,
            "top_p": p.top_p,
            "top_k": p.top_k,
            "seed": seed,
            "repeat_penalty": p.repeat_penalty,
        }
        num_gpu = self._num_gpu()
        if num_gpu is not None:
            opts["num_gpu"] = num_gpu
        return opts

    def _new_run(self, request: GenerationRequest, max_tokens: int) -> _OllamaRun:
        return _OllamaRun(
            request, GenerationStats(backend="ollama", model=self.profile.model), max_tokens
        )

    def _preflight(self, run: _OllamaRun) -> GenerationEvent | None:
        """``PromptTooLong`` when the prompt cannot fit the context the server will run with
        (the model's own, or the one it is loaded with); a failure when it cannot be asked."""
        try:
            info = self.model_info()
        except BackendError as exc:
            return self._failed(exc, run)
        n_ctx = self.effective_context(info)
        capped = f" (the model's own context is {n_ctx})" if n_ctx < self.profile.n_ctx else ""
        hint = "raise n_ctx in the profile, lower max_tokens, or include fewer files"
        loaded = self.loaded_context()
        if loaded is not None and loaded < n_ctx:
            n_ctx = loaded
            capped = (
                f" (the model is loaded with a context of {loaded} although "
                f"num_ctx={self.profile.n_ctx} was sent: the server does not honour num_ctx)"
            )
            hint = (
                f"make the server honour num_ctx={self.profile.n_ctx} (check "
                "OLLAMA_CONTEXT_LENGTH and the model's Modelfile), lower max_tokens, or include "
                "fewer files"
            )
        return self._too_long(run, n_ctx, capped, hint)

    def _generate(self, run: _OllamaRun, cancel: threading.Event) -> Iterator[GenerationEvent]:
        refused = self._preflight(run)
        if refused is not None:
            yield refused
            return
        response: list[httpx.Response] = []

        def on_response(r: httpx.Response) -> None:
            response.append(r)
            if isinstance(r.stream, httpx.SyncByteStream):
                r.stream = _CachedCountTee(r.stream, run.counts)

        def open_stream() -> Iterator[ollama.ChatResponse]:
            client = ollama.Client(
                host=self.host,
                timeout=http_timeout(READ_TIMEOUT_S),
                event_hooks={"response": [on_response]},
            )
            try:
                stream = open_with_retry(
                    lambda: client.chat(
                        model=self.profile.model,
                        messages=run.request.messages,
                        stream=True,
                        format=run.request.schema,
                        options=self.options(run.max_tokens, run.request),
                        keep_alive=self.profile.keep_alive,
                    ),
                    self.retry,
                    cancel,
                )
                yield from stream
            finally:
                client.close()

        self._sent = True
        reader = CancellableStream(
            open_stream,
            cancel,
            on_close=lambda: shutdown_socket(response[-1] if response else None),
        )
        if (yield from self._read(run, reader)) != "read":
            return
        short = self._cut_short(run, reader.cancelled)
        if short is not None:
            yield short
        elif run.final is None:
            yield self._broken(
                f"the stream from Ollama at {self.host} ended without its final message "
                f"after {run.chunks} chunks",
                run,
            )
        else:
            yield self._final(run, run.final)

    def _take(self, run: _OllamaRun, chunk: ollama.ChatResponse) -> str:
        if chunk.done:
            run.final = chunk
        return chunk.message.content or ""

    def _wire_failure(self, exc: Exception, run: _OllamaRun) -> GenerationEvent | None:
        if not isinstance(exc, ollama.ResponseError):
            return None
        if exc.status_code == 404:
            self._info = None
            return self._failed(self._not_pulled(), run)
        code = f"HTTP {exc.status_code}: " if exc.status_code > 0 else ""
        return self._broken(
            f"Ollama at {self.host} failed during generation: {code}{exc.error}", run
        )

    def _final(self, run: _OllamaRun, final: ollama.ChatResponse) -> GenerationEvent:
        """The ending from the final chunk's counts: a cut prompt, else the proposal judged."""
        stats = run.stats_now("stop")
        cached = run.counts.get(CACHED_COUNT_FIELD)
        evaluated = prompt_eval_total(final.prompt_eval_count, cached)
        eval_count = final.eval_count or stats.completion_tokens
        eval_s = (final.eval_duration or 0) / 1e9
        reason = final.done_reason or "stop"
        stats = replace(
            stats,
            prompt_tokens=evaluated or run.expected,
            cached_prompt_tokens=cached or 0,
            completion_tokens=eval_count,
            tokens_per_s=eval_count / eval_s if eval_s > 0 else stats.tokens_per_s,
            finish_reason=reason,
        )
        return self._answer(
            run, stats, evaluated, reason if reason in ("stop", "length") else "stop"
        )

    def _truncated(
        self, run: _OllamaRun, stats: GenerationStats, evaluated: int
    ) -> PromptTruncated:
        loaded = ""
        try:
            entry = self.loaded()
            if entry is not None and entry.context_length:
                loaded = f"; the model is loaded with a context of {entry.context_length}"
        except BackendError:
            pass
        cached = run.counts.get(CACHED_COUNT_FIELD)
        expected = run.expected
        from_cache = f" ({cached} of them from its prompt cache)" if cached else ""
        return PromptTruncated(
            message=f"Ollama evaluated {evaluated} prompt tokens but about {expected} were "
            f"sent{from_cache}: the server cut the prompt, so the answer was written "
            f"without part of it{loaded}",
            hint=f"make the server honour num_ctx={self.profile.n_ctx} (check "
            "OLLAMA_CONTEXT_LENGTH and the model's Modelfile), or include fewer files",
            partial=partial_parse(run.proposal.text),
            raw=run.proposal.text,
            stats=stats,
            sent_tokens=expected,
            evaluated_tokens=evaluated,
        )

    def _invalid(self, result: InvalidAnswer, run: _OllamaRun) -> InvalidAnswer:
        """``result`` naming the model and the likely cause (``format`` ignored)."""
        return replace(
            result,
            message=f"the answer of the Ollama model {self.profile.model!r} is not a valid "
            f"proposal: {result.errors[0] if result.errors else 'invalid'}",
            hint=f"{self.profile.model} may ignore `format` (structured output needs Ollama "
            "0.5 or newer); update Ollama or use a model that follows the JSON schema",
        )

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


__all__ = ["OllamaBackend", "OllamaModelInfo", "ollama_host"]
