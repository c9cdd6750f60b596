"""The OpenAI-compatible backend: vLLM, SGLang, llama-server, llama-cpp-python's server.

Why it trusts nothing: servers differ in how they honour structured output. vLLM ignores the
removed ``guided_json`` fields, some servers answer free text to ``json_object``, and
llama-cpp-python's own server rejects the ``json_schema`` form outright (HTTP 500 "Input
should be 'text' or 'json_object'"). So the backend asks with the standard
``{"type": "json_schema", ...}``, falls back once to ``{"type": "json_object", "schema": ...}``
when a server rejects that form (and remembers the server's flavour for the process), and
validates every answer through ``ProposalStream`` whatever the server claims. An answer that
does not start as a JSON object (free text from a server that dropped the constraint) is
stopped after a short preview and reported invalid, instead of being read to ``max_tokens``.

Several generations may run at once against one server (the batch mode relies on it); a
semaphore per server bounds them by the profile's ``concurrency``. The API key is read from
the environment variable the profile names and only ever goes into the ``Authorization``
header: it is never logged, and it is scrubbed from any server message shown to the user.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx

from engine.core.config import OpenAIProfile
from engine.core.errors import BackendError
from engine.core.events import (
    Cancelled,
    GenerationEvent,
    GenerationStats,
    InvalidAnswer,
    PromptTooLong,
    PromptTruncated,
)
from engine.core.redact import register
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

#: What servers answer when the prompt does not fit: vLLM/SGLang ("maximum context length is
#: 4096 tokens. However, you requested 5000 tokens"), llama.cpp ("Requested tokens (5000)
#: exceed context window of 4096").
_CONTEXT_ERRORS = (
    re.compile(r"maximum context length is (\d+) tokens.*?requested (\d+) tokens", re.S),
    re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)"),
)
#: What llama-cpp-python's server answers to ``{"type": "json_schema"}``.
JSON_SCHEMA_REJECTED = "Input should be 'text' or 'json_object'"
SCHEMA_NAME = "change_proposal"

_flavours: dict[str, str] = {}
"""Server base URL -> the ``response_format`` flavour it accepts (``json_schema`` default)."""
_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_registry_lock = threading.Lock()


def server_flavour(base_url: str) -> str:
    """The ``response_format`` flavour remembered for a server (``json_schema`` or
    ``json_object``)."""
    return _flavours.get(base_url.rstrip("/"), "json_schema")


def forget_flavours() -> None:
    """Forget every remembered server flavour (tests)."""
    _flavours.clear()


def server_semaphore(base_url: str, concurrency: int) -> threading.BoundedSemaphore:
    """The semaphore bounding generations against one server at ``concurrency``."""
    key = (base_url.rstrip("/"), concurrency)
    with _registry_lock:
        sem = _semaphores.get(key)
        if sem is None:
            sem = _semaphores[key] = threading.BoundedSemaphore(concurrency)
        return sem


def structure_only(value: Any) -> Any:
    """``value`` (a JSON schema) without ``pattern`` and ``maxLength`` constraints.

    Why: the ``json_object`` flavour is llama-cpp-python's server, which converts the schema
    with its own Python converter. That converter turns the path pattern's character class
    into a grammar llama.cpp cannot parse ("failed to parse grammar"), and the server process
    then dies (seen with 0.3.36). Types, required keys and item bounds still constrain the
    decoding; patterns and lengths are enforced by the validation every answer goes through.
    """
    if isinstance(value, dict):
        return {k: structure_only(v) for k, v in value.items() if k not in ("pattern", "maxLength")}
    if isinstance(value, list):
        return [structure_only(v) for v in value]
    return value


def response_format(schema: dict[str, Any], flavour: str) -> dict[str, Any]:
    """The ``response_format`` of a request in the server's flavour.

    ``json_schema`` (the OpenAI form) carries the whole schema; ``json_object`` (llama.cpp
    servers' form) carries ``structure_only(schema)``.
    """
    if flavour == "json_object":
        return {"type": "json_object", "schema": structure_only(schema)}
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
    }


class _HTTPStatus(Exception):
    """A non-2xx answer before any token was streamed."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status
        self.text = text


class _StreamError(Exception):
    """An ``{"error": ...}`` object inside the event stream."""


@dataclass
class _Chunk:
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False
    """The ``data: [DONE]`` line: the server ended the stream on purpose."""


def _error_text(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            return str(err.get("message", err))[:500]
        return str(err)[:500]
    return str(data)[:500]


@dataclass
class _OpenAIRun(StreamRun):
    """One generation against an OpenAI-compatible server: what its stream reports."""

    flavour: str = "json_schema"
    """The ``response_format`` flavour this request is sent in."""
    finish: str | None = None
    usage: dict[str, Any] | None = None
    ended: bool = False
    """The server sent ``data: [DONE]``."""


class OpenAICompatBackend(ServerBackend[OpenAIProfile, _OpenAIRun, _Chunk]):
    """Streams a proposal from ``/v1/chat/completions`` (SSE) with a JSON-schema format.

    Args:
        name: the profile's name.
        profile: the OpenAI-compatible profile.
        retry: how connect failures are retried (never a half-streamed generation).
    """

    kind = "openai"
    CONCURRENT = True
    """Up to the profile's ``concurrency`` generations run at once against one server."""
    PREFIX_CACHE = True
    """vLLM (automatic prefix caching), SGLang (radix cache) and llama-server reuse a prefix."""
    EXACT_TOKEN_COUNT = False
    """An estimate, calibrated by the ``usage`` counts the server reports."""

    def __init__(
        self, name: str, profile: OpenAIProfile, *, retry: RetryPolicy | None = None
    ) -> None:
        super().__init__(name, profile, retry=retry)
        self.base_url = profile.base_url.rstrip("/")
        self._client = httpx.Client(timeout=http_timeout(profile.timeout))

    @property
    def server(self) -> str:
        return self.base_url

    # -- helpers ----------------------------------------------------------------------------

    def _api_key(self) -> str | None:
        """The key from the environment variable the profile names.

        Raises:
            BackendError: the profile names a variable that is not set.
        """
        var = self.profile.api_key_env
        if not var:
            return None
        key = os.environ.get(var)
        if not key:
            raise BackendError(
                f"the environment variable {var} (api_key_env of profile {self.name!r}) is not set",
                hint=f"export {var}=<your key> before starting agent-tui",
                title="API key missing",
            )
        register(key)  # whatever the variable is called, the server's errors never show it
        return key

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _scrub(self, text: str) -> str:
        """``text`` without the API key, should a server echo it."""
        var = self.profile.api_key_env
        key = os.environ.get(var) if var else None
        return text.replace(key, "***") if key else text

    def _unreachable(self, exc: BaseException) -> BackendError:
        return BackendError(
            f"the server at {self.base_url} is not reachable ({type(exc).__name__})",
            hint="start the server (vLLM, SGLang, llama-server) or fix base_url in the profile",
            title="Server not reachable",
        )

    def _http_error(self, status: int, text: str) -> BackendError:
        detail = self._scrub(_error_text(text))
        if status in (401, 403):
            var = self.profile.api_key_env
            hint = (
                f"check the key in ${var}"
                if var
                else "set api_key_env to the NAME of the "
                "environment variable holding the server's API key"
            )
            return BackendError(
                f"the server at {self.base_url} refused the request (HTTP {status}): {detail}",
                hint=hint,
                title="Server refused the API key",
            )
        if status == 404:
            return BackendError(
                f"the model {self.profile.model!r} is not served at {self.base_url} "
                f"(HTTP 404: {detail})",
                hint="run `agent-tui doctor` to list the models the server serves, and fix "
                "model or base_url in the profile",
                title="Model not served",
            )
        return BackendError(
            f"the server at {self.base_url} answered HTTP {status}: {detail}",
            title="Server error",
        )

    def _body(self, request: GenerationRequest, max_tokens: int, flavour: str) -> dict[str, Any]:
        p = self.profile
        body: dict[str, Any] = {
            "model": p.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": p.temperature if request.temperature is None else request.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k,
            "seed": p.seed if request.seed is None else request.seed,
            "response_format": response_format(request.schema, flavour),
        }
        if p.repeat_penalty != 1.0:
            body["repeat_penalty"] = p.repeat_penalty  # llama.cpp servers
            body["repetition_penalty"] = p.repeat_penalty  # vLLM, SGLang
        if p.dry_multiplier > 0.0:  # llama-server's DRY (koboldcpp, text-generation-webui too)
            body["dry_multiplier"] = p.dry_multiplier
            body["dry_base"] = p.dry_base
            body["dry_allowed_length"] = p.dry_allowed_length
            body["dry_penalty_last_n"] = p.dry_penalty_last_n
            body["dry_sequence_breakers"] = list(p.dry_sequence_breakers)
        return body

    def _sse(
        self, body: dict[str, Any], headers: dict[str, str], holder: list[httpx.Response]
    ) -> Iterator[_Chunk]:
        """POST the request and yield the parsed SSE chunks."""
        req = self._client.build_request(
            "POST", f"{self.base_url}/chat/completions", json=body, headers=headers
        )
        resp = self._client.send(req, stream=True)
        holder.append(resp)
        try:
            if resp.status_code >= 400:
                resp.read()
                raise _HTTPStatus(resp.status_code, resp.text)
            yield _Chunk()  # connected: the retry window ends here
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    yield _Chunk(done=True)
                    return
                event = json.loads(data)
                if "error" in event:
                    raise _StreamError(_error_text(data))
                chunk = _Chunk(usage=event.get("usage") or None)
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    chunk.text += delta.get("content") or ""
                    chunk.finish_reason = choice.get("finish_reason") or chunk.finish_reason
                yield chunk
        finally:
            resp.close()

    # -- doctor -----------------------------------------------------------------------------

    def served_models(self) -> list[dict[str, Any]]:
        """The ``data`` of ``GET /models``.

        Raises:
            BackendError: unreachable, refused, or an HTTP error.
        """
        headers = self._headers()
        delays = self.retry.delays()
        while True:
            try:
                resp = self._client.get(f"{self.base_url}/models", headers=headers, timeout=10.0)
                break
            except httpx.HTTPError as exc:
                delay = next(delays, None) if is_connect_error(exc) else None
                if delay is None:
                    raise self._unreachable(exc) from None
                time.sleep(delay)
        if resp.status_code >= 400:
            if resp.status_code == 404:
                raise BackendError(
                    f"{self.base_url}/models answered HTTP 404: base_url may lack its /v1",
                    hint="base_url is the part before /chat/completions, e.g. http://host:8000/v1",
                    title="Not an OpenAI-compatible URL",
                )
            raise self._http_error(resp.status_code, resp.text)
        try:
            data = resp.json().get("data", [])
        except (ValueError, AttributeError):
            raise BackendError(
                f"{self.base_url}/models did not answer an OpenAI model list",
                title="Not an OpenAI-compatible URL",
            ) from None
        return [m for m in data if isinstance(m, dict)]

    def llama_server_props(self) -> dict[str, Any] | None:
        """llama-server's ``GET /props`` (at the server root), or None for any other server.

        Why: llama-server serving one model answers every model name with it, so a profile
        whose ``model`` is not the served id still works there; a multi-model server (vLLM,
        LM Studio, Ollama's /v1, llama-cpp-python's server) answers 404 to a wrong name.
        Only llama-server has ``/props`` with ``default_generation_settings``.
        """
        root = re.sub(r"/v1/?$", "", self.base_url.rstrip("/"))
        try:
            resp = self._client.get(f"{root}/props", headers=self._headers(), timeout=5.0)
            data = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError, BackendError):
            return None
        if isinstance(data, dict) and isinstance(data.get("default_generation_settings"), dict):
            return data
        return None

    def probe(self) -> ServerProbe:
        """Reachable? Model served? Context length when the server tells (for doctor)."""
        probe = ServerProbe(url=self.base_url, reachable=False, model=self.profile.model)
        try:
            models = self.served_models()
        except BackendError as exc:
            probe.error, probe.hint = exc.message, exc.hint
            return probe
        probe.reachable = True
        probe.models = [str(m.get("id")) for m in models]
        entry = next((m for m in models if m.get("id") == self.profile.model), None)
        props = self.llama_server_props()
        if entry is None and props is not None and len(models) == 1:
            # llama-server with one model answers every model name with it: not a failure
            entry = models[0]
            probe.served_model = str(entry.get("id"))
        probe.model_present = entry is not None
        if entry is None:
            probe.hint = "set model to one of the served ids"
            return probe
        meta: dict[str, Any] = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
        settings = (props or {}).get("default_generation_settings")
        served_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        for value in (
            served_ctx,
            entry.get("max_model_len"),
            entry.get("context_length"),
            meta.get("n_ctx"),
        ):
            if isinstance(value, int) and value > 0:
                probe.context_length = value
                break
        notes = [f"response_format flavour: {server_flavour(self.base_url)}"]
        if probe.served_model:
            notes.append(
                f"llama-server serves one model ({probe.served_model}) and answers any model "
                f"name with it: the profile's model {self.profile.model!r} is only a label"
            )
        if probe.context_length and probe.context_length < self.profile.n_ctx:
            notes.append(
                f"n_ctx={self.profile.n_ctx} is larger than the served context "
                f"({probe.context_length})"
            )
        probe.notes = notes
        return probe

    # -- generation -------------------------------------------------------------------------

    def _acquire(self, sem: threading.BoundedSemaphore, cancel: threading.Event) -> bool:
        while not cancel.is_set():
            if sem.acquire(timeout=0.05):
                return True
        return False

    def _new_run(self, request: GenerationRequest, max_tokens: int) -> _OpenAIRun:
        base = GenerationStats(backend="openai", model=self.profile.model)
        return _OpenAIRun(request, base, max_tokens)

    def _generate(self, run: _OpenAIRun, cancel: threading.Event) -> Iterator[GenerationEvent]:
        try:
            headers = self._headers()
        except BackendError as exc:
            yield self._failed(exc, run)
            return
        too_long = self._too_long(
            run,
            self.profile.n_ctx,
            "",
            "raise n_ctx in the profile (up to the server's max_model_len), lower "
            "max_tokens, or include fewer files",
        )
        if too_long is not None:
            yield too_long
            return
        sem = server_semaphore(self.base_url, self.profile.concurrency)
        if not self._acquire(sem, cancel):
            yield Cancelled(
                message="cancelled while waiting for a free slot on the server",
                stats=replace(
                    run.base, finish_reason="cancelled", elapsed_s=time.monotonic() - run.t0
                ),
            )
            return
        try:
            yield from self._stream(run, cancel, headers)
        finally:
            sem.release()

    def _stream(
        self, run: _OpenAIRun, cancel: threading.Event, headers: dict[str, str]
    ) -> Iterator[GenerationEvent]:
        run.flavour = server_flavour(self.base_url)
        while True:  # at most twice: json_schema, then json_object once
            holder: list[httpx.Response] = []
            body = self._body(run.request, run.max_tokens, run.flavour)

            def open_stream(
                body: dict[str, Any] = body, holder: list[httpx.Response] = holder
            ) -> Iterator[_Chunk]:
                return open_with_retry(lambda: self._sse(body, headers, holder), self.retry, cancel)

            def drop(holder: list[httpx.Response] = holder) -> None:
                shutdown_socket(holder[-1] if holder else None)

            reader = CancellableStream(open_stream, cancel, on_close=drop)
            outcome = yield from self._read(run, reader)
            if outcome == "reopen":
                continue
            if outcome == "failed":
                return
            break
        short = self._cut_short(run, reader.cancelled)
        if short is not None:
            yield short
        elif not run.ended and run.finish is None:
            yield self._broken(
                f"the stream from {self.base_url} ended after {run.chunks} chunks without a "
                "finish_reason or [DONE]: the server stopped mid-answer",
                run,
            )
        else:
            yield self._final(run)

    def _take(self, run: _OpenAIRun, chunk: _Chunk) -> str:
        run.ended = run.ended or chunk.done
        if chunk.usage:
            run.usage = chunk.usage
        if chunk.finish_reason:
            run.finish = chunk.finish_reason
        return chunk.text

    def _reopen(self, exc: Exception, run: _OpenAIRun) -> bool:
        """A server that rejects the ``json_schema`` form is asked again with ``json_object``
        (and remembered for the process)."""
        if (
            isinstance(exc, _HTTPStatus)
            and run.flavour == "json_schema"
            and exc.status in (400, 422, 500)
            and JSON_SCHEMA_REJECTED in exc.text
        ):
            run.flavour = _flavours[self.base_url] = "json_object"
            return True
        return False

    def _wire_failure(self, exc: Exception, run: _OpenAIRun) -> GenerationEvent | None:
        if isinstance(exc, _HTTPStatus):
            too_long = self._context_error(exc.text, run.max_tokens, run.base)
            if too_long is not None:
                return too_long
            return self._failed(self._http_error(exc.status, exc.text), run)
        if isinstance(exc, _StreamError):
            return self._broken(
                f"the server at {self.base_url} failed during generation: {self._scrub(str(exc))}",
                run,
            )
        return None

    def _final(self, run: _OpenAIRun) -> GenerationEvent:
        """The ending from the ``usage`` the server reported: a cut prompt, else the proposal
        judged."""
        stats = run.stats_now(run.finish or "stop")
        evaluated: int | None = None
        usage = run.usage
        if usage:
            evaluated = usage.get("prompt_tokens") or None
            details = usage.get("prompt_tokens_details") or {}
            stats = replace(
                stats,
                prompt_tokens=evaluated or run.expected,
                completion_tokens=usage.get("completion_tokens") or run.chunks,
                cached_prompt_tokens=(details.get("cached_tokens") or 0)
                if isinstance(details, dict)
                else 0,
            )
        return self._answer(run, stats, evaluated, "length" if run.finish == "length" else "stop")

    def _truncated(
        self, run: _OpenAIRun, stats: GenerationStats, evaluated: int
    ) -> PromptTruncated:
        return PromptTruncated(
            message=f"the server at {self.base_url} evaluated {evaluated} prompt tokens but "
            f"about {run.expected} were sent: it cut the prompt, so the answer was written "
            "without part of it",
            hint="raise the server's context (vLLM --max-model-len, llama-server -c) or "
            "include fewer files",
            partial=partial_parse(run.proposal.text),
            raw=run.proposal.text,
            stats=stats,
            sent_tokens=run.expected,
            evaluated_tokens=evaluated,
        )

    def _invalid(self, result: InvalidAnswer, run: _OpenAIRun) -> InvalidAnswer:
        """``result`` naming the model, the server and the likely cause (schema dropped)."""
        return replace(
            result,
            message=f"the answer of {self.profile.model!r} served at {self.base_url} is not "
            f"a valid proposal: {result.errors[0] if result.errors else 'invalid'}",
            hint=f"the server dropped the JSON-schema constraint (response_format "
            f"{run.flavour}); use a server build with structured output (vLLM with "
            "xgrammar/guidance, SGLang, llama-server) and check its log for a schema error",
        )

    def _context_error(
        self, text: str, max_tokens: int, base: GenerationStats
    ) -> PromptTooLong | None:
        """A server's "prompt too long" answer as ``PromptTooLong`` with its numbers."""
        for i, pattern in enumerate(_CONTEXT_ERRORS):
            found = pattern.search(text)
            if found is None:
                continue
            a, b = int(found.group(1)), int(found.group(2))
            n_ctx, requested = (a, b) if i == 0 else (b, a)
            return PromptTooLong(
                message=f"the server at {self.base_url} has a context of {n_ctx} tokens and "
                f"this request needs {requested} (prompt + max_tokens={max_tokens})",
                hint="include fewer files, lower max_tokens, or raise the server's context "
                "(vLLM --max-model-len, llama-server -c) and n_ctx in the profile",
                stats=replace(base, finish_reason="error"),
                prompt_tokens=max(0, requested - max_tokens),
                n_ctx=n_ctx,
                reserved=max_tokens,
            )
        return None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


__all__ = [
    "OpenAICompatBackend",
    "JSON_SCHEMA_REJECTED",
    "forget_flavours",
    "response_format",
    "server_flavour",
    "server_semaphore",
    "structure_only",
]
