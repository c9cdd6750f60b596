"""Loopback model servers speaking Ollama's and OpenAI's wire protocols, backed by a real model.

Neither Ollama nor vLLM can be installed here, so the server backends are tested against this
server: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 that speaks

* Ollama: ``POST /api/chat`` (streaming NDJSON or one JSON), ``POST /api/show``,
  ``GET /api/ps``, ``GET /api/tags``;
* OpenAI: ``POST /v1/chat/completions`` (SSE with ``stream: true``, one JSON otherwise),
  ``GET /v1/models``;

and answers with the real llama.cpp engine (``LlamaCppBackend.decode`` of the embedded Gemma
model) under the JSON schema the request carried (``format`` / ``response_format``): every
token on the wire was sampled by the model, nothing is canned. Knobs (``ServerKnobs``)
simulate what real servers do wrong: a missing model, a context cap that cuts long prompts
(reporting the smaller, true ``prompt_eval_count``), ignoring the schema (the same model held
to any JSON object, or unconstrained), a server-side output cap, slow streams, a connection
dropped mid-answer, the ``json_schema`` rejection of llama-cpp-python's server, an API key;
and what real Ollama builds report differently: the prefix cache's ``prompt_eval_cached_count``
(counted in ``prompt_eval_count`` or not), a given ``eval_duration``.

Concurrency: one backend is one llama.cpp context, so concurrent requests queue on it (its
generation lock). ``FakeModelServer([b1, b2, ...])`` gives the server a pool of contexts, one
per slot like llama-server's ``--parallel``: up to that many requests decode at once (the
batch benchmark measures what that buys on this machine).

Reuse: ``FakeModelServer(backend, knobs).start()`` (a context manager too), its ``url``
(Ollama host), ``v1`` (OpenAI base URL), ``bodies(path)`` (JSON received), ``log`` (in-flight
high-water mark, disconnects, answers). ``PROPOSAL_MESSAGES`` is a prompt the embedded model
answers with a valid proposal in ~50 tokens. The pytest fixture ``fake_model_server`` (in
``tests/conftest.py``) starts servers with knobs and stops them after the test.
"""

from __future__ import annotations

import codecs
import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engine.generate.backends.llama_cpp import LlamaCppBackend
from engine.generate.decode import DecodeDone, DecodeOptions, PromptEvaluated, TokensDecoded
from engine.generate.sampling import SamplingParams

OLLAMA_MODEL = "gemma3:270m"
OPENAI_MODEL = "gemma-3-270m"
#: What llama-cpp-python's server answers to ``response_format: {"type": "json_schema"}``.
JSON_SCHEMA_REJECTION = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}\n"
)
#: A prompt the embedded model answers with a valid proposal in about 50 tokens.
PROPOSAL_MESSAGES: list[dict[str, str]] = [
    {
        "role": "user",
        "content": "Reply with this JSON exactly: "
        '{"branch_suffix":"add-hello","commit_message":"feat: add hello","pr_title":"Add hello",'
        '"pr_body":"Closes #1","files":[{"path":"hello.txt","content":"hi"}]}',
    }
]
#: A prompt whose answer, held to "any JSON object", is not a proposal.
GREETING_MESSAGES: list[dict[str, str]] = [
    {"role": "user", "content": 'Reply with this JSON exactly: {"greeting": "hello"}'}
]
#: What a server that dropped the schema for "JSON mode" makes the model answer: any JSON object,
#: here one that is short and bounded, so the answer's shape (an object, not a proposal) does
#: not depend on the CPU's rounding. An unbounded ``{"type": "object"}`` let greedy text on one
#: CPU close the object in 30 tokens and on another run to ``max_tokens``.
NOT_A_PROPOSAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"greeting": {"type": "string", "maxLength": 12}},
    "required": ["greeting"],
    "additionalProperties": False,
}
#: The free text of a server that dropped the schema altogether (``ignore_schema="text"``).
FREE_TEXT_ANSWER = (
    "Sure! Here is the JSON you asked for, with the greeting you wanted in it. "
    "The greeting is hello, as written in your message, and nothing else is needed. " * 6
)
#: Seconds between the scripted answer's chunks: a client that stops reading is noticed
#: (a disconnect), as it is mid-way through a real model's answer.
SCRIPT_CHUNK_S = 0.005
#: Tokens kept at the start when a prompt is cut (Ollama's ``num_keep``: BOS and the turn head).
NUM_KEEP = 4


@dataclass
class ServerKnobs:
    """How the fake server behaves (defaults: a healthy server)."""

    models: tuple[str, ...] = (OLLAMA_MODEL, OPENAI_MODEL)
    """The models it has (pulled / served); any other name is 404."""
    context_length: int = 32768
    """The context ``/api/show`` and ``/v1/models`` report."""
    context_cap: int | None = None
    """Cut prompts longer than this many tokens (keep ``NUM_KEEP`` + the tail), whatever
    ``num_ctx`` said, and report the true, smaller ``prompt_eval_count``."""
    ignore_schema: str | None = None
    """Drop the schema it was sent, as some servers silently do. ``"json"``: the model answers
    a JSON object that is not a proposal (the "fall back to JSON mode" servers), held to
    ``NOT_A_PROPOSAL_SCHEMA`` so that it closes on every CPU; ``"text"``: free text, streamed
    from ``FREE_TEXT_ANSWER`` (the model's own free text differs between CPUs, and where it
    starts is what the backend's check looks at)."""
    max_tokens_cap: int | None = None
    """A server-side output cap: the answer stops with ``length``."""
    delay_s: float = 0.0
    """Sleep after each streamed chunk (slow streams, cancel tests)."""
    reject_json_schema: bool = False
    """Answer HTTP 500 "Input should be 'text' or 'json_object'" to ``json_schema``."""
    api_key: str | None = None
    """Require ``Authorization: Bearer <api_key>`` on the OpenAI routes."""
    drop_after: int | None = None
    """Close the connection after this many streamed chunks (a server that crashes)."""
    enforce_context: bool = False
    """OpenAI routes: answer HTTP 400 (vLLM's words) when prompt + max_tokens exceeds
    ``context_length``."""
    prompt_cache: str | None = None
    """Ollama route: report the prefix shared with the previous request's prompt (Ollama keeps
    one slot's KV cache; the last prompt token is always evaluated again) as
    ``prompt_eval_cached_count``. ``"included"``: ``prompt_eval_count`` is still the whole prompt
    (Ollama's own definition, the field is "how many of prompt_eval_count came from the cache");
    ``"excluded"``: ``prompt_eval_count`` counts only the newly evaluated tokens, as builds that
    pass llama-server's ``prompt_n`` through do. ``None``: no cached count (older Ollama)."""
    eval_duration_s: float | None = None
    """Ollama route: report this ``eval_duration`` instead of the measured decode time."""
    llama_server: bool = False
    """Behave like llama.cpp's ``llama-server``: answer ``GET /props`` (its own endpoint, at
    the server root), list the model with llama-server's ``meta``, and when it serves one
    model answer chat requests for any model name (llama-server ignores the name then)."""


@dataclass
class _Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    reason: str
    prompt_s: float
    decode_s: float


@dataclass
class ServerLog:
    """What the server saw."""

    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """``(path, JSON body)`` of every POST."""
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    disconnects: int = 0
    """Streams the client closed before the end (cancel)."""
    completed: int = 0
    answers: list[tuple[str, int, str]] = field(default_factory=list)
    """``(text, completion_tokens, finish reason)`` of every answer the model finished."""
    loaded_ctx: int | None = None
    """The context the last Ollama request ran with (what ``/api/ps`` reports); set it to
    simulate a model another client loaded."""
    last_prompt: list[int] = field(default_factory=list)
    """The tokens of the last Ollama prompt (its KV cache: what the next one can reuse)."""


class FakeModelServer:
    """An HTTP server on 127.0.0.1 answering with the real model.

    Args:
        backend: the llama.cpp backend whose ``decode`` produces the tokens, or a pool of
            them (one context per slot: that many requests decode at once).
        knobs: behaviour switches.
    """

    def __init__(
        self,
        backend: LlamaCppBackend | Sequence[LlamaCppBackend],
        knobs: ServerKnobs | None = None,
        *,
        port: int = 0,
    ) -> None:
        pool = [backend] if isinstance(backend, LlamaCppBackend) else list(backend)
        self.backend = pool[0]
        """Tokenizes every prompt (and decodes when it is the only slot)."""
        self.backends = pool
        self._slots: queue.Queue[LlamaCppBackend] = queue.Queue()
        for slot in pool:
            self._slots.put(slot)
        self.knobs = knobs or ServerKnobs()
        self.log = ServerLog()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL (an Ollama host)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def v1(self) -> str:
        """The OpenAI-compatible base URL."""
        return self.url + "/v1"

    def start(self) -> FakeModelServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, after the generations still running end (a test that failed mid-stream
        must not leave a decode running into the model's teardown: llama.cpp segfaults)."""
        self._httpd.shutdown()
        self.wait_idle(timeout=30.0)
        self._httpd.server_close()

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the server records ----------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        return self.log.requests

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies POSTed to ``path``."""
        return [body for p, body in self.log.requests if p == path]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no generation is running (after a client went away)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.log.in_flight == 0:
                return True
            time.sleep(0.02)
        return False

    # -- the model ------------------------------------------------------------------------------

    def prompt_tokens(self, messages: list[dict[str, str]], cap: int | None) -> list[int]:
        """The real prompt tokens, cut like Ollama's runner when longer than ``cap``."""
        tokens = self.backend.prompt_tokens(messages)
        if cap is not None and len(tokens) > cap:
            tokens = tokens[:NUM_KEEP] + tokens[len(tokens) - (cap - NUM_KEEP) :]
        return tokens

    def cache_hit(self, prompt: list[int]) -> int:
        """Tokens of ``prompt`` an Ollama runner reuses from the previous prompt's KV cache.

        The longest shared prefix, less one when it is the whole prompt (the last token is
        evaluated again for its logits); the prompt becomes the cache.
        """
        with self._lock:
            last, self.log.last_prompt = self.log.last_prompt, list(prompt)
        shared = 0
        for a, b in zip(last, prompt, strict=False):
            if a != b:
                break
            shared += 1
        return min(shared, max(len(prompt) - 1, 0))

    def generate(
        self,
        prompt: list[int],
        schema: dict[str, Any] | None,
        sampling: SamplingParams,
        max_tokens: int,
        cancel: threading.Event,
    ) -> Generator[str | _Answer, None, None]:
        """Text deltas from the real model, then one ``_Answer`` with the counts."""
        if self.knobs.ignore_schema == "json":
            schema = NOT_A_PROPOSAL_SCHEMA
        elif self.knobs.ignore_schema == "text":
            yield from self._scripted(FREE_TEXT_ANSWER, prompt, max_tokens, cancel)
            return
        if self.knobs.max_tokens_cap is not None:
            max_tokens = min(max_tokens, self.knobs.max_tokens_cap)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text: list[str] = []
        prompt_s = 0.0
        done: DecodeDone | None = None
        slot = self._slots.get()  # a free context (waits while every slot decodes)
        items = slot.decode(  # a third-party server streams what it decodes: no rewinds
            prompt,
            schema=schema,
            sampling=sampling,
            max_tokens=max_tokens,
            cancel=cancel,
            options=DecodeOptions(backtrack=0),
        )
        try:
            for item in items:
                if isinstance(item, PromptEvaluated):
                    prompt_s = item.seconds
                elif isinstance(item, TokensDecoded):
                    delta = utf8.decode(item.data)
                    if delta:
                        text.append(delta)
                        yield delta
                elif isinstance(item, DecodeDone):
                    done = item
        finally:
            if done is None:
                cancel.set()  # the client went away mid-answer
            close = getattr(items, "close", None)
            if close is not None:
                close()  # releases the model's generation lock at once
            self._slots.put(slot)
        tail = utf8.decode(b"", final=True)
        if tail:
            text.append(tail)
            yield tail
        assert done is not None
        reason = {"context": "length"}.get(done.reason, done.reason)
        with self._lock:
            self.log.answers.append(("".join(text), done.completion_tokens, reason))
        yield _Answer(
            text="".join(text),
            prompt_tokens=len(prompt),
            completion_tokens=done.completion_tokens,
            reason=reason,
            prompt_s=prompt_s or done.prompt_seconds,
            decode_s=done.decode_seconds,
        )

    def _scripted(
        self, answer: str, prompt: list[int], max_tokens: int, cancel: threading.Event
    ) -> Generator[str | _Answer, None, None]:
        """``answer`` streamed a word at a time (each word counts as one token)."""
        words = [w for w in re.findall(r"\S*\s*", answer) if w][:max_tokens]
        start = time.monotonic()
        for word in words:
            if cancel.is_set():
                return
            time.sleep(SCRIPT_CHUNK_S)
            yield word
        text = "".join(words)
        reason = "length" if len(words) == max_tokens else "stop"
        with self._lock:
            self.log.answers.append((text, len(words), reason))
        yield _Answer(
            text=text,
            prompt_tokens=len(prompt),
            completion_tokens=len(words),
            reason=reason,
            prompt_s=0.0,
            decode_s=time.monotonic() - start,
        )

    def _enter(self) -> None:
        with self._lock:
            self.log.in_flight += 1
            self.log.max_in_flight = max(self.log.max_in_flight, self.log.in_flight)

    def _leave(self, completed: bool, disconnected: bool) -> None:
        with self._lock:
            self.log.in_flight -= 1
            self.log.completed += completed
            self.log.disconnects += disconnected


def _sampling(temperature: Any, top_p: Any, top_k: Any, seed: Any, penalty: Any) -> SamplingParams:
    return SamplingParams(
        temperature=float(temperature if temperature is not None else 0.0),
        top_p=float(top_p if top_p is not None else 1.0),
        top_k=int(top_k if top_k is not None else 40),
        seed=int(seed or 0),
        repeat_penalty=float(penalty if penalty is not None else 1.0),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _ClientGone(Exception):
    pass


class _ServerDrop(Exception):
    """The server "crashes": the connection closes without the end of the chunked body."""


def _make_handler(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        _sent = 0

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        # -- plumbing ---------------------------------------------------------------------

        def _json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _start_chunked(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError) as exc:
                raise _ClientGone from exc

        def _end_chunked(self) -> None:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError as exc:
                raise _ClientGone from exc

        def _pace(self) -> None:
            """After a streamed chunk: slow down, or die mid-answer."""
            self._sent += 1
            if server.knobs.drop_after is not None and self._sent >= server.knobs.drop_after:
                self.close_connection = True
                raise _ServerDrop
            if server.knobs.delay_s:
                time.sleep(server.knobs.delay_s)

        def _body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            if len(raw) < length:
                # the client died while sending (a test SIGKILLs it): no request arrived, so
                # none is logged (it used to be logged as ``{}``, a flaky count under load)
                self.close_connection = True
                return None
            body = json.loads(raw or b"{}")
            server.log.requests.append((self.path, body))
            server.log.headers.append(dict(self.headers))
            return body if isinstance(body, dict) else {}

        # -- routes ---------------------------------------------------------------------------

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path == "/api/tags":
                self._json(200, {"models": [_ollama_model_entry(m) for m in _served(server)]})
            elif self.path == "/api/ps":
                loaded = []
                if server.log.loaded_ctx is not None:
                    entry = _ollama_model_entry(OLLAMA_MODEL)
                    entry["expires_at"] = _now()
                    entry["size_vram"] = 0
                    entry["context_length"] = server.log.loaded_ctx
                    loaded.append(entry)
                self._json(200, {"models": loaded})
            elif self.path == "/props" and server.knobs.llama_server:
                self._json(200, _llama_server_props(server))
            elif self.path == "/v1/models":
                if not self._authorized():
                    return
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": m,
                                "object": "model",
                                "created": 0,
                                "owned_by": "agent-tui-tests",
                                **_openai_model_extra(server),
                            }
                            for m in _served(server)
                        ],
                    },
                )
            else:
                self._json(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            try:
                body = self._body()
            except ValueError:
                self._json(400, {"error": "invalid JSON body"})
                return
            if body is None:  # the client went away mid-request: nothing to answer
                return
            if self.path == "/api/show":
                self._ollama_show(body)
            elif self.path == "/api/chat":
                self._ollama_chat(body)
            elif self.path == "/v1/chat/completions":
                self._openai_chat(body)
            else:
                self._json(404, {"error": f"no route {self.path}"})

        # -- Ollama ---------------------------------------------------------------------------

        def _ollama_show(self, body: dict[str, Any]) -> None:
            model = str(body.get("model") or body.get("name") or "")
            if model not in _served(server):
                self._json(404, {"error": f"model '{model}' not found"})
                return
            self._json(
                200,
                {
                    "modelfile": f"FROM {model}\n",
                    "parameters": 'stop "<end_of_turn>"',
                    "template": "{{ .Prompt }}",
                    "details": _ollama_details(),
                    "model_info": {
                        "general.architecture": "gemma3",
                        "general.parameter_count": 268098176,
                        "gemma3.context_length": server.knobs.context_length,
                        "gemma3.embedding_length": 640,
                    },
                    "capabilities": ["completion"],
                    "modified_at": _now(),
                },
            )

        def _ollama_chat(self, body: dict[str, Any]) -> None:
            self._sent = 0
            model = str(body.get("model") or "")
            if model not in _served(server):
                self._json(404, {"error": f'model "{model}" not found, try pulling it first'})
                return
            opts = body.get("options") or {}
            num_ctx = int(opts.get("num_ctx") or 2048)  # Ollama's default when none is sent
            cap = num_ctx if server.knobs.context_cap is None else server.knobs.context_cap
            server.log.loaded_ctx = cap
            fmt = body.get("format")
            schema = fmt if isinstance(fmt, dict) else ({"type": "object"} if fmt else None)
            num_predict = int(opts.get("num_predict") or -1)
            max_tokens = num_predict if num_predict > 0 else 4096
            sampling = _sampling(
                opts.get("temperature", 0.8),
                opts.get("top_p", 0.9),
                opts.get("top_k", 40),
                opts.get("seed"),
                opts.get("repeat_penalty", 1.1),
            )
            t0 = time.monotonic_ns()
            cancel = threading.Event()
            server._enter()
            completed = gone = False
            gen: Generator[str | _Answer, None, None] | None = None
            try:
                prompt = server.prompt_tokens(body.get("messages") or [], cap)
                cached = server.cache_hit(prompt)
                gen = server.generate(prompt, schema, sampling, max_tokens, cancel)
                if body.get("stream", True) is False:
                    parts = list(gen)
                    answer = parts[-1]
                    assert isinstance(answer, _Answer)
                    self._json(
                        200, _ollama_final(model, answer, t0, answer.text, server.knobs, cached)
                    )
                    completed = True
                    return
                self._start_chunked("application/x-ndjson")
                for part in gen:
                    if isinstance(part, _Answer):
                        final = _ollama_final(model, part, t0, "", server.knobs, cached)
                        self._chunk(json.dumps(final).encode() + b"\n")
                    else:
                        line = {
                            "model": model,
                            "created_at": _now(),
                            "message": {"role": "assistant", "content": part},
                            "done": False,
                        }
                        self._chunk(json.dumps(line).encode() + b"\n")
                        self._pace()
                self._end_chunked()
                completed = True
            except _ClientGone:
                cancel.set()
                gone = True
                self.close_connection = True
            except _ServerDrop:
                cancel.set()
            finally:
                if gen is not None:
                    gen.close()
                server._leave(completed, gone)

        # -- OpenAI ---------------------------------------------------------------------------

        def _authorized(self) -> bool:
            key = server.knobs.api_key
            if key is None or self.headers.get("Authorization") == f"Bearer {key}":
                return True
            self._json(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
            return False

        def _openai_chat(self, body: dict[str, Any]) -> None:
            self._sent = 0
            if not self._authorized():
                return
            model = str(body.get("model") or "")
            any_name = server.knobs.llama_server and len(_served(server)) == 1
            if model not in _served(server) and not any_name:
                self._json(
                    404,
                    {
                        "error": {
                            "message": f"The model `{model}` does not exist.",
                            "type": "NotFoundError",
                            "code": 404,
                        }
                    },
                )
                return
            fmt = body.get("response_format") or {}
            kind = fmt.get("type", "text")
            if kind == "json_schema" and server.knobs.reject_json_schema:
                self._json(
                    500,
                    {"error": {"message": JSON_SCHEMA_REJECTION, "type": "internal_server_error"}},
                )
                return
            if kind == "json_schema":
                schema = (fmt.get("json_schema") or {}).get("schema")
            elif kind == "json_object":
                schema = fmt.get("schema") or {"type": "object"}
            else:
                schema = None
            max_tokens = int(body.get("max_tokens") or 4096)
            messages = body.get("messages") or []
            if server.knobs.enforce_context:
                n = len(server.prompt_tokens(messages, None))
                if n + max_tokens > server.knobs.context_length:
                    self._json(
                        400,
                        {
                            "error": {
                                "message": "This model's maximum context length is "
                                f"{server.knobs.context_length} tokens. However, you requested "
                                f"{n + max_tokens} tokens ({n} in the messages, {max_tokens} in "
                                "the completion). Please reduce the length of the messages or "
                                "completion.",
                                "type": "BadRequestError",
                                "code": 400,
                            }
                        },
                    )
                    return
            sampling = _sampling(
                body.get("temperature", 1.0),
                body.get("top_p", 1.0),
                body.get("top_k", 40),
                body.get("seed"),
                body.get("repeat_penalty", body.get("repetition_penalty")),
            )
            cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            created = int(time.time())
            cancel = threading.Event()
            server._enter()
            completed = gone = False
            gen: Generator[str | _Answer, None, None] | None = None
            try:
                prompt = server.prompt_tokens(messages, server.knobs.context_cap)
                gen = server.generate(prompt, schema, sampling, max_tokens, cancel)
                if not body.get("stream"):
                    answer = list(gen)[-1]
                    assert isinstance(answer, _Answer)
                    self._json(200, _openai_final(cid, created, model, answer))
                    completed = True
                    return
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._start_chunked("text/event-stream")
                first = True
                for part in gen:
                    if isinstance(part, _Answer):
                        last = _openai_chunk(cid, created, model, {}, part.reason)
                        self._chunk(_sse(last))
                        if include_usage:
                            usage = _openai_chunk(cid, created, model, None, None)
                            usage["usage"] = _usage(part)
                            self._chunk(_sse(usage))
                    else:
                        delta: dict[str, Any] = {"content": part}
                        if first:
                            delta["role"] = "assistant"
                            first = False
                        self._chunk(_sse(_openai_chunk(cid, created, model, delta, None)))
                        self._pace()
                self._chunk(b"data: [DONE]\n\n")
                self._end_chunked()
                completed = True
            except _ClientGone:
                cancel.set()
                gone = True
                self.close_connection = True
            except _ServerDrop:
                cancel.set()
            finally:
                if gen is not None:
                    gen.close()
                server._leave(completed, gone)

    return Handler


def _served(server: FakeModelServer) -> tuple[str, ...]:
    return server.knobs.models


def _openai_model_extra(server: FakeModelServer) -> dict[str, Any]:
    """What a ``/v1/models`` entry carries besides the id: vLLM's ``max_model_len``, or
    llama-server's ``meta`` (the training context; the served one is in ``/props``)."""
    if server.knobs.llama_server:
        return {
            "meta": {
                "vocab_type": 1,
                "n_vocab": 262144,
                "n_ctx_train": 32768,
                "n_embd": 640,
                "n_params": 268098176,
                "size": 240816384,
            }
        }
    return {"max_model_len": server.knobs.context_length}


def _llama_server_props(server: FakeModelServer) -> dict[str, Any]:
    """llama-server's ``GET /props`` (the fields a client reads; real ones carry more)."""
    served = _served(server)
    return {
        "default_generation_settings": {
            "n_ctx": server.knobs.context_length,
            "params": {"n_predict": -1, "temperature": 0.8, "seed": 4294967295},
        },
        "total_slots": 1,
        "model_alias": served[0] if served else "",
        "model_path": f"/models/{served[0] if served else 'model'}.gguf",
        "modalities": {"vision": False, "audio": False},
        "chat_template": "{{ messages }}",
        "build_info": "b6000-fake",
    }


def _ollama_details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "gemma3",
        "families": ["gemma3"],
        "parameter_size": "268.10M",
        "quantization_level": "Q4_K_M",
    }


def _ollama_model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": _now(),
        "size": 253_000_000,
        "digest": uuid.uuid5(uuid.NAMESPACE_URL, name).hex * 2,
        "details": _ollama_details(),
    }


def _ollama_final(
    model: str, answer: _Answer, t0_ns: int, content: str, knobs: ServerKnobs, cached: int
) -> dict[str, Any]:
    decode_s = answer.decode_s if knobs.eval_duration_s is None else knobs.eval_duration_s
    final: dict[str, Any] = {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": answer.reason,
        "total_duration": time.monotonic_ns() - t0_ns,
        "load_duration": 0,
        "prompt_eval_count": answer.prompt_tokens,
        "prompt_eval_duration": int(answer.prompt_s * 1e9),
        "eval_count": answer.completion_tokens,
        "eval_duration": int(decode_s * 1e9),
    }
    if knobs.prompt_cache is not None:
        final["prompt_eval_cached_count"] = cached
        if knobs.prompt_cache == "excluded":
            final["prompt_eval_count"] = answer.prompt_tokens - cached
    return final


def _usage(answer: _Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _openai_chunk(
    cid: str, created: int, model: str, delta: dict[str, Any] | None, finish: str | None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _openai_final(cid: str, created: int, model: str, answer: _Answer) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.reason,
            }
        ],
        "usage": _usage(answer),
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


__all__ = [
    "FakeModelServer",
    "FREE_TEXT_ANSWER",
    "GREETING_MESSAGES",
    "PROPOSAL_MESSAGES",
    "JSON_SCHEMA_REJECTION",
    "NUM_KEEP",
    "OLLAMA_MODEL",
    "OPENAI_MODEL",
    "ServerKnobs",
    "ServerLog",
]
