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

import importlib
import itertools
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import platformdirs

from engine.core.config import LlamaCppProfile
from engine.core.errors import AgentTuiError, BackendError, ModelHostCrashed, ModelLoadError
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
from engine.generate.stream import partial_parse

#: seconds a host may take to stop after a cancel before it is killed
CANCEL_GRACE_S = 2.0
#: log lines quoted in a crash message
TAIL_LINES = 8
#: a host's log past this size is renamed to ``.log.1`` when the next host starts
LOG_ROTATE_BYTES = 4 * 1024 * 1024

_log_llama = False


def set_log_llama(on: bool) -> None:
    """Copy llama.cpp's log lines to the app's stderr (``--verbose``); hosts started later."""
    global _log_llama
    _log_llama = on


def log_llama() -> bool:
    """Whether llama.cpp's log lines are copied to the app's stderr."""
    return _log_llama


def log_dir() -> Path:
    """Where the model hosts write llama.cpp's log (the app's state directory)."""
    return Path(platformdirs.user_state_dir("agent-tui")) / "logs"


def log_path(profile_name: str) -> Path:
    """The llama.cpp log file of one profile's host."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", profile_name) or "model"
    return log_dir() / f"llama-{safe}.log"


_SIGNAL_WORDS = {
    "SIGSEGV": "a segmentation fault in native code",
    "SIGABRT": "an abort (llama.cpp's GGML_ABORT, e.g. out of GPU memory)",
    "SIGKILL": "killed (the system may have run out of memory)",
    "SIGBUS": "a bus error in native code",
    "SIGILL": "an illegal instruction (a build for another CPU?)",
    "SIGFPE": "an arithmetic fault in native code",
}


def _describe_end(returncode: int | None) -> tuple[str, int | None, str]:
    """(signal name, exit code, words) for a finished child's return code."""
    if returncode is None:
        return "", None, "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        words = _SIGNAL_WORDS.get(name, "killed by a signal")
        return name, None, f"{name}: {words}"
    return "", returncode, f"exited with code {returncode}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _read_tail(path: Path, offset: int, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines written to ``path`` after ``offset``."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(offset, size - 16384)
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ()
    text = data.decode("utf-8", errors="replace")
    kept = [_CONTROL.sub("", line).rstrip() for line in text.splitlines()]
    return tuple(line for line in kept if line.strip())[-lines:]


# ============================================================================================
# The parent side


def _child_env() -> tuple[dict[str, str], str]:
    """The environment and working directory of a child: it imports the very engine this
    process runs (a checkout on ``PYTHONPATH`` as much as an installed package)."""
    root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env, root


@dataclass
class _Dead:
    """Posted to every waiting request when the host is gone."""

    signal: str
    exit_code: int | None
    words: str
    log_tail: tuple[str, ...]
    log: Path


class _Host:
    """One running child process and the requests waiting on it."""

    def __init__(self, name: str, profile: LlamaCppProfile) -> None:
        self.name = name
        self.log = log_path(name)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:  # one old generation of the log is kept
            if self.log.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log, self.log.with_name(self.log.name + ".1"))
        except OSError:
            pass
        parent_sock, child_sock = socket.socketpair()
        self._log_fh = open(self.log, "ab")  # noqa: SIM115 - the child's stderr for its life
        self.log_offset = self._log_fh.seek(0, os.SEEK_END)
        pass_fds = [child_sock.fileno()]
        env, root = _child_env()
        env["AGENT_TUI_HOST_FD"] = str(child_sock.fileno())
        echo = -1
        if _log_llama:
            echo = os.dup(sys.stderr.fileno())
            pass_fds.append(echo)
        env["AGENT_TUI_HOST_ECHO_FD"] = str(echo)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.generate.backends.host_child"],
                stdin=subprocess.DEVNULL,
                stdout=self._log_fh,
                stderr=self._log_fh,
                pass_fds=pass_fds,
                env=env,
                close_fds=True,
                cwd=root,
                # its own session: a Ctrl-C in the terminal is the app's to handle (a cancel),
                # it must not kill the host
                start_new_session=True,
            )
        finally:
            child_sock.close()
            if echo >= 0:
                os.close(echo)
        self.conn = Connection(parent_sock.detach())
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.Queue[Any]] = {}
        self._waiting_lock = threading.Lock()
        self.dead: _Dead | None = None
        self.send(0, "init", (name, profile))
        self._reader = threading.Thread(target=self._read, name=f"model-host-{name}", daemon=True)
        self._reader.start()

    # -- plumbing ----------------------------------------------------------------------------
    def send(self, rid: int, op: str, payload: Any = None) -> bool:
        """Send one message; False when the host is gone."""
        try:
            with self._send_lock:
                self.conn.send((rid, op, payload))
            return True
        except (OSError, EOFError, ValueError):
            return False

    def request(self, op: str, payload: Any = None) -> tuple[int, queue.Queue[Any]]:
        """Start a request; its answers arrive on the returned queue."""
        rid = next(self._ids)
        answers: queue.Queue[Any] = queue.Queue()
        with self._waiting_lock:
            if self.dead is not None:
                answers.put(self.dead)
                return rid, answers
            self._waiting[rid] = answers
        if not self.send(rid, op, payload):
            self._wait_dead()
        return rid, answers

    def finish(self, rid: int) -> None:
        with self._waiting_lock:
            self._waiting.pop(rid, None)

    def call(self, op: str, payload: Any = None) -> Any:
        """A request with one answer: its value, or its error raised."""
        rid, answers = self.request(op, payload)
        try:
            item = answers.get()
        finally:
            self.finish(rid)
        if isinstance(item, _Dead):
            raise _DeadError(item)
        kind, value = item
        if kind == "err":
            raise _rebuild_error(value)
        return value

    def _read(self) -> None:
        while True:
            try:
                rid, kind, value = self.conn.recv()
            except (EOFError, OSError, ValueError):
                break
            except Exception:  # a message we cannot unpickle: the host is not sane
                self.kill()
                break
            with self._waiting_lock:
                answers = self._waiting.get(rid)
            if answers is not None:
                answers.put((kind, value))
        self._wait_dead()

    def _wait_dead(self) -> None:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log_fh.flush()
        sig, exit_code, words = _describe_end(code)
        dead = _Dead(sig, exit_code, words, _read_tail(self.log, self.log_offset), self.log)
        with self._waiting_lock:
            if self.dead is None:
                self.dead = dead
            waiting = list(self._waiting.values())
        for answers in waiting:
            answers.put(self.dead)

    @property
    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    def kill(self) -> None:
        """End the child now (SIGKILL) and reap it, so the next use starts a new host."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self, timeout: float = CANCEL_GRACE_S) -> None:
        """Ask the child to exit; kill it when it does not within ``timeout``."""
        if self.proc.poll() is None:
            self.send(0, "close")
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.conn.close()
        except OSError:
            pass
        self._reader.join(timeout=timeout)
        self._log_fh.close()


def _rebuild_error(info: tuple[str, str, str, str, str]) -> AgentTuiError:
    """The child's typed error, rebuilt in this process (same class when it is ours)."""
    module, qualname, message, hint, title = info
    cls: Any = BackendError
    if module.startswith("engine."):
        try:
            found = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            found = None
        if isinstance(found, type) and issubclass(found, AgentTuiError):
            cls = found
    try:
        error: AgentTuiError = cls(message, hint=hint, title=title)
    except TypeError:
        error = BackendError(message, hint=hint, title=title)
    return error


class HostedLlamaBackend(Backend[LlamaCppProfile]):
    """A ``llama_cpp`` profile served by its own model host process (see the module doc)."""

    kind = "llama_cpp"
    CAN_CANCEL = True
    CONCURRENT = False
    PREFIX_CACHE = True
    EXACT_TOKEN_COUNT = True

    def __init__(self, name: str, profile: LlamaCppProfile) -> None:
        super().__init__(name, profile)
        self._host: _Host | None = None
        self._lock = threading.Lock()
        self._loaded = False
        self.warnings: list[str] = []
        """Warnings from loading (e.g. GPU offload asked for but unavailable)."""
        self.crashes = 0
        """Hosts of this backend that died (tests, the TUI's model badge)."""
        self.last_crash: ModelHostCrashed | None = None

    # -- the host ----------------------------------------------------------------------------
    def _ensure_host(self) -> _Host:
        with self._lock:
            host = self._host
            if host is not None and not host.alive:
                host.close(timeout=0.5)
                self._host = host = None
                self._loaded = False
            if host is None:
                host = self._host = _Host(self.name, self.profile)
            return host

    @property
    def host_pid(self) -> int | None:
        """The running host's process id (None: none runs)."""
        host = self._host
        return host.proc.pid if host is not None and host.alive else None

    def _crash_error(self, dead: _Dead, during: str) -> ModelHostCrashed:
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

    def _crash_message(self, dead: _Dead, during: str) -> str:
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
        except _DeadError as exc:
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
                if isinstance(item, _Dead):
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
            yield _failed_from_error(_rebuild_error(value), relay.stats, relay.raw, relay.partial)
            return
        for event in value:
            relay.note(event)
            yield event

    def _crashed(self, relay: _Relay, dead: _Dead) -> HostCrashed:
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
        self, host: _Host, rid: int, answers: queue.Queue[Any], cancel_sent: float
    ) -> None:
        if not cancel_sent:
            host.send(rid, "cancel")
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline:
            try:
                item = answers.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, _Dead):
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
            self.raw.append(event.text)
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


class _DeadError(Exception):
    """Raised by ``_Host.call`` when the host is gone (turned into ``ModelHostCrashed``)."""

    def __init__(self, dead: _Dead) -> None:
        super().__init__(dead.words)
        self.dead = dead


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
    env, root = _child_env()
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
    sig, exit_code, words = _describe_end(out.returncode)
    tail = _read_tail(log, offset)
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


__all__ = [
    "CANCEL_GRACE_S",
    "HostedLlamaBackend",
    "log_dir",
    "log_llama",
    "log_path",
    "probe_gguf",
    "set_log_llama",
]
