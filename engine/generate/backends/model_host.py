"""The model host: llama.cpp in a child process, so a crash there never takes the app down.

Why a child process: llama.cpp is native code. A segfault, a ``GGML_ABORT`` on a CUDA
out-of-memory or the kernel's OOM killer ends the whole process that runs it; in-process, that
is the user's TUI session with its proposal and edits. Ollama, llama-server and LM Studio keep
the runtime in its own process for this reason, and so do we.

``HostedLlamaBackend`` is what the registry gives a ``llama_cpp`` profile. It implements the
same ``Backend`` interface and forwards every call to a child (``python -m
engine.generate.backends.host_child``, the child's side) that runs the unchanged
``LlamaCppBackend``: the check-first decoding loop, llguidance's matcher and the prefix KV
cache all live there. The two talk over a socket pair with pickled messages; the child sends
the backend's own typed events, several per message (text merged, only the newest partial
proposal kept), so nothing per token crosses the pipe needlessly.

* The host starts on first use and lives as long as its backend (one per loaded profile; the
  registry keeps one backend per profile for the app's life). ``close()`` ends it.
* Cancel is a message the child's reader thread turns into the backend's ``threading.Event``
  (so it stops within one token, or mid-batch through llama.cpp's abort callback); a host that
  has not answered 2 s after a cancel is killed, and the next use starts a new one.
* When the host dies, the generation ends with ``HostCrashed`` (a ``BackendFailed``) naming the
  signal or exit code, the last lines llama.cpp logged and the profile's ``n_ctx`` and
  ``n_gpu_layers``, with what to try; outside a generation (loading, counting tokens) the same
  words come as a raised ``ModelHostCrashed``. The next use starts a new host.
* llama.cpp's own log lines go to ``<state dir>/logs/llama-<profile>.log`` (the child's stderr
  is that file), never to the terminal; ``set_log_llama(True)`` (``--verbose``, ``[generation]
  log_llama``) copies them to the app's stderr too.

A test hook crashes the host on purpose: ``AGENT_TUI_HOST_CRASH=MOMENT:HOW`` with MOMENT one of
``load``, ``prompt``, ``decode`` and HOW a signal name (``SIGSEGV``, ``SIGABRT``, ``SIGKILL``)
or ``exit3``; with ``AGENT_TUI_HOST_CRASH_ONCE=FILE`` only the first host that gets to create
FILE crashes; ``AGENT_TUI_HOST_CRASH_FILE=FILE`` reads MOMENT:HOW from FILE at each moment (to
arm a running host). ``AGENT_TUI_HOST_HOLD=1`` makes a generation wait after its first text
until it is cancelled (a slow machine's pace, for UI tests; read by the app at each request).
The others are read only by the child.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.core.config import LlamaCppProfile
from engine.core.errors import AgentTuiError, ModelHostCrashed, ModelLoadError
from engine.core.events import (
    BackendFailed,
    Cancelled,
    Finished,
    GenerationEvent,
    GenerationFailed,
    GenerationStats,
    HostCrashed,
    PromptProcessed,
    ProposalUpdated,
    TokensGenerated,
)
from engine.generate.backends.base import Backend, GenerationRequest
from engine.generate.backends.host_process import (
    CANCEL_GRACE_S,
    HostEnd,
    HostGone,
    HostProcess,
    child_env,
    describe_end,
    log_path,
    read_tail,
    rebuild_error,
)
from engine.generate.stream import partial_parse


class HostedLlamaBackend(Backend[LlamaCppProfile]):
    """A ``llama_cpp`` profile served by its own model host process (see the module doc)."""

    kind = "llama_cpp"
    CAN_CANCEL = True
    CONCURRENT = False
    PREFIX_CACHE = True
    EXACT_TOKEN_COUNT = True

    def __init__(self, name: str, profile: LlamaCppProfile) -> None:
        super().__init__(name, profile)
        self._host: HostProcess | None = None
        self._lock = threading.Lock()
        self._loaded = False
        self.warnings: list[str] = []
        """Warnings from loading (e.g. GPU offload asked for but unavailable)."""
        self.crashes = 0
        """Hosts of this backend that died (tests, the TUI's model badge)."""
        self.last_crash: ModelHostCrashed | None = None

    # -- the host ----------------------------------------------------------------------------
    def _ensure_host(self) -> HostProcess:
        with self._lock:
            host = self._host
            if host is not None and not host.alive:
                host.close(timeout=0.5)
                self._host = host = None
                self._loaded = False
            if host is None:
                host = self._host = HostProcess(self.name, self.profile)
            return host

    @property
    def host_pid(self) -> int | None:
        """The running host's process id (None: none runs)."""
        host = self._host
        return host.proc.pid if host is not None and host.alive else None

    def _crash_error(self, dead: HostEnd, during: str) -> ModelHostCrashed:
        self.crashes += 1
        error = ModelHostCrashed(
            self._crash_message(dead, during),
            hint=self._crash_hint(dead.log),
            signal=dead.signal,
            exit_code=dead.exit_code,
            log_tail=dead.log_tail,
        )
        self.last_crash = error
        return error

    def _crash_message(self, dead: HostEnd, during: str) -> str:
        p = self.profile
        text = (
            f"the model host of profile {self.name!r} died {during} ({dead.words}); "
            f"n_ctx={p.n_ctx}, n_gpu_layers={p.n_gpu_layers}. agent-tui itself is fine"
        )
        if dead.log_tail:
            text += ". llama.cpp's last log lines:\n  " + "\n  ".join(dead.log_tail)
        return text

    def _crash_hint(self, log: Path | None = None) -> str:
        p = self.profile
        tries = [f"a smaller n_ctx (now {p.n_ctx})"]
        if p.n_gpu_layers != 0:
            tries.append(f"fewer GPU layers (n_gpu_layers, now {p.n_gpu_layers})")
        tries.append("a server profile (backend = 'ollama' or 'openai')")
        return (
            "try " + ", ".join(tries[:-1]) + " or " + tries[-1] + "; the next generation starts "
            f"a new model host. The full llama.cpp log: {log or log_path(self.name)}"
        )

    def _call(self, op: str, payload: Any, during: str) -> Any:
        if not self._loaded:
            during = "while loading the model"
        host = self._ensure_host()
        try:
            result = host.call(op, payload)
        except HostGone as exc:
            self._loaded = False
            raise self._crash_error(exc.dead, during) from None
        self._loaded = True  # every request loads the model in the host first
        return result

    # -- Backend -----------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        """Start the host and load the model in it (it loads lazily otherwise).

        Returns:
            What the host says about the model (``n_ctx``, ``n_vocab``, ``warnings``).

        Raises:
            ModelLoadError: the file is missing, not a GGUF, or llama.cpp cannot load it.
            ModelHostCrashed: the host died while loading.
        """
        info: dict[str, Any] = self._call("load", None, "while loading the model")
        self.warnings = list(info.get("warnings", []))
        self._loaded = True
        return info

    @property
    def loaded(self) -> bool:
        """Whether a host runs with the model in memory."""
        return self._loaded and self._host is not None and self._host.alive

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        result: int = self._call("count_tokens", messages, "while counting tokens")
        return result

    def count_text(self, text: str) -> int:
        result: int = self._call("count_text", text, "while counting tokens")
        return result

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Exactly the tokens ``generate`` evaluates for ``messages``."""
        result: list[int] = self._call("prompt_tokens", messages, "while counting tokens")
        return result

    def close(self) -> None:
        """End the host (the next use starts a new one)."""
        with self._lock:
            host, self._host = self._host, None
            self._loaded = False
        if host is not None:
            host.close()

    def generate(
        self,
        request: GenerationRequest,
        cancel: threading.Event | None = None,
        *,
        sampling: Any = None,
        options: Any = None,
    ) -> Iterator[GenerationEvent]:
        """Stream the host's events for ``request``; the last is final.

        ``sampling``/``options`` are ``LlamaCppBackend.generate``'s (forwarded as they are).
        A host that dies ends the stream with ``HostCrashed``; one that does not stop within
        2 s of ``cancel`` is killed and the stream ends with ``Cancelled``.
        """
        cancel = cancel or threading.Event()
        stats = GenerationStats(backend=self.kind, model=self.name)
        try:
            host = self._ensure_host()
        except OSError as exc:
            yield HostCrashed(
                message=f"profile {self.name!r}: the model host could not start: {exc}",
                hint=self._crash_hint(),
                stats=stats,
            )
            return
        extra: dict[str, Any] = {}
        if sampling is not None:
            extra["sampling"] = sampling
        if options is not None:
            extra["options"] = options
        hold = os.environ.get("AGENT_TUI_HOST_HOLD") == "1"  # a test hook, see the module doc
        rid, answers = host.request("generate", (request, extra, hold))
        relay = _Relay(stats, model_loaded=self._loaded)
        try:
            while True:
                if cancel.is_set() and not relay.cancel_sent:
                    relay.cancel_sent = time.monotonic()
                    host.send(rid, "cancel")
                if relay.cancel_sent and time.monotonic() - relay.cancel_sent > CANCEL_GRACE_S:
                    host.kill()
                    self._loaded = False
                    yield relay.stuck()
                    return
                try:
                    item = answers.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, HostEnd):
                    yield self._crashed(relay, item)
                    return
                yield from self._answer(relay, *item)
                if relay.final_seen:
                    return
        finally:
            if not relay.final_seen:
                # the consumer stopped reading: stop the host's loop so the next request is clean
                self._abandon(host, rid, answers, relay.cancel_sent)
            host.finish(rid)

    def _answer(self, relay: _Relay, kind: str, value: Any) -> Iterator[GenerationEvent]:
        """The events of one answer of the host (a batch of events, loaded, or its error)."""
        if kind == "loaded":
            self._loaded = relay.model_loaded = True
            self.warnings = list(value.get("warnings", []))
            return
        if kind == "err":  # an unexpected error in the host (a bug): typed anyway
            relay.final_seen = True
            yield _failed_from_error(rebuild_error(value), relay.stats, relay.raw, relay.partial)
            return
        for event in value:
            relay.note(event)
            yield event

    def _crashed(self, relay: _Relay, dead: HostEnd) -> HostCrashed:
        """The ending of a generation whose host died, naming when it died."""
        if relay.prompt_done is None:
            during = "while evaluating the prompt"
            if not relay.model_loaded:
                during = "while loading the model"
        else:
            during = f"while decoding (after {relay.completion} tokens)"
        error = self._crash_error(dead, during)
        self._loaded = False
        relay.final_seen = True
        raw = "".join(relay.raw)
        partial = relay.partial
        if partial is None and relay.raw:
            partial = partial_parse(raw)
        prompt_done = relay.prompt_done
        return HostCrashed(
            message=error.message,
            hint=error.hint,
            partial=partial,
            raw=raw,
            stats=replace(
                relay.stats,
                prompt_tokens=prompt_done.prompt_tokens if prompt_done else 0,
                completion_tokens=relay.completion,
                finish_reason="error",
            ),
            signal=dead.signal,
            exit_code=dead.exit_code,
            log_tail=dead.log_tail,
        )

    def _abandon(
        self, host: HostProcess, rid: int, answers: queue.Queue[Any], cancel_sent: float
    ) -> None:
        if not cancel_sent:
            host.send(rid, "cancel")
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline:
            try:
                item = answers.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, HostEnd):
                return
            kind, value = item
            if kind == "err" or (
                kind == "events" and any(isinstance(e, Finished | GenerationFailed) for e in value)
            ):
                return
        host.kill()


@dataclass
class _Relay:
    """What the parent learned from the host's events of one generation (for its endings)."""

    stats: GenerationStats
    model_loaded: bool
    raw: list[str] = field(default_factory=list)
    partial: dict[str, Any] | None = None
    prompt_done: PromptProcessed | None = None
    completion: int = 0
    cancel_sent: float = 0.0
    final_seen: bool = False

    def note(self, event: GenerationEvent) -> None:
        """Record ``event`` on its way to the consumer."""
        if isinstance(event, PromptProcessed):
            self.prompt_done = event
        elif isinstance(event, TokensGenerated):
            event.add_to(self.raw)
            self.completion = event.completion_tokens
        elif isinstance(event, ProposalUpdated):
            self.partial = event.partial
        if isinstance(event, Finished | GenerationFailed):
            self.final_seen = True

    def stuck(self) -> Cancelled:
        """The ending of a cancel the host did not honour in time (it was killed)."""
        self.final_seen = True
        return Cancelled(
            message=f"cancelled after {self.completion} tokens (the model host did not "
            f"stop within {CANCEL_GRACE_S:.0f} s and was restarted)",
            hint="regenerate when ready",
            partial=self.partial,
            raw="".join(self.raw),
            stats=replace(self.stats, completion_tokens=self.completion, finish_reason="cancelled"),
        )


def _failed_from_error(
    error: AgentTuiError,
    stats: GenerationStats,
    raw: list[str],
    partial: dict[str, Any] | None,
) -> GenerationFailed:
    return BackendFailed(
        message=error.render(),
        hint=error.hint,
        partial=partial,
        raw="".join(raw),
        stats=replace(stats, finish_reason="error"),
    )


def probe_gguf(path: Path, timeout: float = 120.0) -> dict[str, Any]:
    """A vocab-only load of ``path`` in a throwaway child (``doctor``'s loadability check).

    Returns:
        ``{"n_vocab": int, "has_template": bool}``.

    Raises:
        ModelLoadError: llama.cpp cannot parse it (its words).
        ModelHostCrashed: the child died (a signal or an exit code), with its last log lines.
    """
    log = log_path("doctor")
    log.parent.mkdir(parents=True, exist_ok=True)
    env, root = child_env()
    with open(log, "ab") as fh:
        offset = fh.seek(0, os.SEEK_END)
        try:
            out = subprocess.run(
                [sys.executable, "-m", "engine.generate.backends.host_child", "--probe", str(path)],
                env=env,
                cwd=root,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=fh,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ModelLoadError(f"reading {path} took over {timeout:.0f} s") from None
    lines = out.stdout.decode("utf-8", errors="replace").strip().splitlines()
    if out.returncode == 0 and lines:
        result: dict[str, Any] = json.loads(lines[-1])
        if "error" in result:
            raise ModelLoadError(f"llama.cpp cannot load it: {result['error']}")
        return result
    sig, exit_code, words = describe_end(out.returncode)
    tail = read_tail(log, offset)
    message = f"reading {path} killed the checking process ({words})"
    if tail:
        message += ". llama.cpp's last log lines:\n  " + "\n  ".join(tail)
    raise ModelHostCrashed(
        message,
        hint=f"the file may be damaged or need a newer llama.cpp; the log: {log}",
        signal=sig,
        exit_code=exit_code,
        log_tail=tail,
    )


__all__ = ["HostedLlamaBackend", "probe_gguf"]
