"""The model host's child process: one ``LlamaCppBackend`` serving its parent over a socket.

Why a module of its own: ``engine.generate.backends.model_host`` is the parent's side (the
``HostedLlamaBackend`` the app holds, which starts, watches and kills hosts); this is what runs
in the child (``python -m engine.generate.backends.host_child``): a reader thread that turns a
cancel message into the backend's ``threading.Event`` at once, a worker for loading and token
counting, and the main thread running one generation at a time, sending its events in small
batches (``_coalesce``). It also holds the crash test hook (``AGENT_TUI_HOST_CRASH``, see the
parent module's docstring) and ``--probe``, the vocab-only load ``doctor`` runs in a
throwaway child.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engine.core.errors import AgentTuiError, BackendError
from engine.core.events import (
    BackendFailed,
    Finished,
    GenerationEvent,
    GenerationFailed,
    GenerationStats,
    PromptProcessed,
    ProposalUpdated,
    TokensGenerated,
)
from engine.generate.backends.base import GenerationRequest

#: the child sends what it has at least this often while decoding
FLUSH_INTERVAL_S = 0.02


class _CrashHook:
    """The test hook: crash this host at one moment (see the module docstring).

    ``AGENT_TUI_HOST_CRASH`` is read once; ``AGENT_TUI_HOST_CRASH_FILE`` names a file read at
    every moment, so a test can arm a host that is already running.
    """

    def __init__(self) -> None:
        self.static = os.environ.get("AGENT_TUI_HOST_CRASH", "")
        self.file = os.environ.get("AGENT_TUI_HOST_CRASH_FILE", "")
        self.once = os.environ.get("AGENT_TUI_HOST_CRASH_ONCE", "")

    @property
    def active(self) -> bool:
        return bool(self.static or self.file)

    def spec(self) -> tuple[str, str]:
        text = self.static
        if self.file:
            try:
                text = Path(self.file).read_text().strip()
            except OSError:
                text = ""
        moment, _, how = text.partition(":")
        return moment, how

    def fire(self, moment: str) -> None:
        if not self.active:
            return
        armed, how = self.spec()
        if armed != moment:
            return
        if self.once:
            try:
                os.close(os.open(self.once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        sys.stderr.write(f"agent-tui test hook: crashing the host at {moment} ({how})\n")
        sys.stderr.flush()
        if how.startswith("exit"):
            os._exit(int(how[4:] or 1))
        os.kill(os.getpid(), getattr(signal, how, signal.SIGSEGV))  # default actions here
        time.sleep(60)  # the signal arrives first (SIGSTOP: the host hangs, as a test wants)
        os._exit(99)


class _Child:
    """The host's side: one ``LlamaCppBackend``, a reader thread and two workers."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.cancels: dict[int, threading.Event] = {}
        self.gen_queue: queue.Queue[Any] = queue.Queue()
        self.aux_queue: queue.Queue[Any] = queue.Queue()
        self.hook = _CrashHook()
        self.backend: Any = None
        self.loaded = False
        self._load_lock = threading.Lock()

    def send(self, rid: int, kind: str, value: Any) -> None:
        with self.send_lock:
            self.conn.send((rid, kind, value))

    def send_error(self, rid: int, exc: BaseException) -> None:
        if isinstance(exc, AgentTuiError):
            info = (type(exc).__module__, type(exc).__qualname__, exc.message, exc.hint, exc.title)
        else:
            info = (
                "builtins",
                type(exc).__name__,
                f"the model host failed: {type(exc).__name__}: {exc}",
                "this is a bug in agent-tui or llama.cpp; report it with the model name",
                "Model backend error",
            )
        self.send(rid, "err", info)

    def load(self) -> dict[str, Any]:
        with self._load_lock:
            if not self.loaded:
                self.hook.fire("load")
                model = self.backend.load()
                if self.hook.active:
                    original = model.eval_prompt

                    def eval_prompt(tokens: list[int], cancel: threading.Event) -> bool:
                        self.hook.fire("prompt")
                        return bool(original(tokens, cancel))

                    model.eval_prompt = eval_prompt
                self.loaded = True
            model = self.backend.load()
            return {
                "n_ctx": model.n_ctx,
                "n_vocab": model.n_vocab,
                "warnings": list(self.backend.warnings),
            }

    def read(self) -> None:
        """The reader thread: cancels act at once, the rest is queued for the workers."""
        while True:
            try:
                rid, op, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            if op == "cancel":
                event = self.cancels.get(rid)
                if event is not None:
                    event.set()
            elif op == "close":
                break
            elif op == "generate":
                self.cancels[rid] = threading.Event()
                self.gen_queue.put((rid, payload))
            else:
                self.aux_queue.put((rid, op, payload))
        for event in list(self.cancels.values()):
            event.set()
        self.gen_queue.put(None)
        self.aux_queue.put(None)

    def aux(self) -> None:
        """Loading and token counting (may run while a generation decodes, as in-process)."""
        while True:
            item = self.aux_queue.get()
            if item is None:
                return
            rid, op, payload = item
            try:
                info = self.load()
                if op == "load":
                    value: Any = info
                elif op == "count_tokens":
                    value = self.backend.count_tokens(payload)
                elif op == "count_text":
                    value = self.backend.count_text(payload)
                elif op == "prompt_tokens":
                    value = self.backend.prompt_tokens(payload)
                else:
                    raise BackendError(f"the model host does not know {op!r}")
            except Exception as exc:
                self.send_error(rid, exc)
                continue
            self.send(rid, "ok", value)

    def generations(self) -> None:
        """The main thread: one generation at a time, events sent in small batches."""
        while True:
            item = self.gen_queue.get()
            if item is None:
                return
            rid, (request, extra, hold) = item
            cancel = self.cancels[rid]
            try:
                self.generate(rid, request, extra, cancel, hold=hold)
            except Exception as exc:
                self.send_error(rid, exc)
            finally:
                self.cancels.pop(rid, None)

    def generate(
        self,
        rid: int,
        request: GenerationRequest,
        extra: dict[str, Any],
        cancel: threading.Event,
        *,
        hold: bool = False,
    ) -> None:
        try:
            info = self.load()
        except AgentTuiError as exc:
            stats = GenerationStats(backend="llama_cpp", model=self.backend.name)
            self.send(
                rid, "events", [BackendFailed(message=exc.render(), hint=exc.hint, stats=stats)]
            )
            return
        self.send(rid, "loaded", info)
        pending: list[GenerationEvent] = []
        last = time.perf_counter()
        tokens_events = 0
        fired = False
        # hold (a test hook): after the first text, wait for the user's cancel
        for event in self.backend.generate(request, cancel, **extra):
            pending.append(event)
            final = isinstance(event, Finished | GenerationFailed)
            if isinstance(event, TokensGenerated):
                tokens_events += 1
            now = time.perf_counter()
            if final or isinstance(event, PromptProcessed) or now - last >= FLUSH_INTERVAL_S:
                self.send(rid, "events", _coalesce(pending))
                pending = []
                last = now
            if hold and tokens_events == 1 and not final:
                if pending:
                    self.send(rid, "events", _coalesce(pending))
                    pending = []
                cancel.wait(timeout=120)
            if tokens_events == 3 and not final and not fired:
                fired = True
                if pending:
                    self.send(rid, "events", _coalesce(pending))
                    pending = []
                self.hook.fire("decode")
        if pending:
            self.send(rid, "events", _coalesce(pending))


def _coalesce(events: list[GenerationEvent]) -> list[GenerationEvent]:
    """Merge runs of token text into one event and keep only the newest partial proposal."""
    out: list[GenerationEvent] = []
    text: list[str] = []
    last_tokens: TokensGenerated | None = None
    last_partial: ProposalUpdated | None = None

    rewind = 0  # characters the merged event takes back from before its first event

    def flush() -> None:
        nonlocal last_tokens, last_partial, rewind
        if last_tokens is not None:
            out.append(replace(last_tokens, text="".join(text), rewind=rewind))
        if last_partial is not None:
            out.append(last_partial)
        text.clear()
        last_tokens = last_partial = None
        rewind = 0

    for event in events:
        if isinstance(event, TokensGenerated):
            if event.rewind:
                merged = "".join(text)
                rewind += max(event.rewind - len(merged), 0)
                text[:] = [merged[: max(len(merged) - event.rewind, 0)]]
            text.append(event.text)
            last_tokens = event
        elif isinstance(event, ProposalUpdated):
            last_partial = event
        else:
            flush()
            out.append(event)
    flush()
    return out


def _install_log(echo_fd: int) -> Any:
    """llama.cpp's log callback: every line to our stderr (the log file), and to the app's
    stderr when asked. Writes to a duplicate of the log's descriptor, so llama-cpp-python's
    ``verbose=False`` (which points fd 2 at /dev/null while loading) does not lose them."""
    import llama_cpp

    log_fd = os.dup(2)
    last_level = [0]

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def callback(level: int, text: bytes, _user: Any) -> None:
        if level == 5:  # GGML_LOG_LEVEL_CONT: the previous line's level
            level = last_level[0]
        last_level[0] = level
        if level == 4:  # GGML_LOG_LEVEL_DEBUG: thousands of lines per load
            return
        try:
            os.write(log_fd, text)
            if echo_fd >= 0:
                os.write(echo_fd, text)
        except OSError:
            pass

    llama_cpp.llama_log_set(callback, None)
    return callback  # kept alive by the caller


def _probe_main(path: str) -> int:
    import json

    keep = _install_log(-1)  # a collected callback would crash llama.cpp's next log line
    import llama_cpp

    _CrashHook().fire("load")

    try:
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    except Exception as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    result = {
        "n_vocab": int(llm.n_vocab()),
        "has_template": "tokenizer.chat_template" in llm.metadata,
    }
    print(json.dumps(result), flush=True)
    del keep
    os._exit(0)


def host_main() -> int:
    """The child process: read the init message, then serve until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the app turns Ctrl-C into a cancel message
    fd = int(os.environ["AGENT_TUI_HOST_FD"])
    echo_fd = int(os.environ.get("AGENT_TUI_HOST_ECHO_FD", "-1"))
    conn = Connection(fd)
    try:
        _rid, op, payload = conn.recv()
    except (EOFError, OSError):
        return 0
    if op != "init":
        return 2
    name, profile = payload
    child = _Child(conn)
    try:
        keep = _install_log(echo_fd)
        from engine.generate.backends.llama_cpp import LlamaCppBackend

        child.backend = LlamaCppBackend(name, profile)
    except Exception as exc:  # llama_cpp missing or broken: every request says so
        print(f"model host: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    reader = threading.Thread(target=child.read, name="host-reader", daemon=True)
    aux = threading.Thread(target=child.aux, name="host-aux", daemon=True)
    reader.start()
    aux.start()
    child.generations()
    del keep
    os._exit(0)  # skip llama.cpp's teardown: the process ends here anyway


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        sys.exit(_probe_main(sys.argv[2]))
    sys.exit(host_main())
