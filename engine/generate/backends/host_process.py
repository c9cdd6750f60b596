"""The parent's handle on one model host process: start, talk, watch, kill; and its log.

Why apart from the backend: ``HostedLlamaBackend`` (``model_host``) decides what a request
means and how a generation ends; this module is the process plumbing under it: the child
started with its own session and its stderr appended to ``<state dir>/logs/llama-<profile>.log``
(rotated once past ``LOG_ROTATE_BYTES``), one socket pair with pickled ``(id, op, payload)``
messages, a reader thread routing answers to the request waiting on them, and what is known
when the child dies (signal or exit code, the log's last lines) as a ``HostEnd``.
"""

from __future__ import annotations

import importlib
import itertools
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import platformdirs

from engine.core.config import LlamaCppProfile
from engine.core.errors import AgentTuiError, BackendError

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


def describe_end(returncode: int | None) -> tuple[str, int | None, str]:
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


def read_tail(path: Path, offset: int, lines: int = TAIL_LINES) -> tuple[str, ...]:
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


def child_env() -> tuple[dict[str, str], str]:
    """The environment and working directory of a child: it imports the very engine this
    process runs (a checkout on ``PYTHONPATH`` as much as an installed package)."""
    root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env, root


def rebuild_error(info: tuple[str, str, str, str, str]) -> AgentTuiError:
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


@dataclass
class HostEnd:
    """Posted to every waiting request when the host is gone."""

    signal: str
    exit_code: int | None
    words: str
    log_tail: tuple[str, ...]
    log: Path


class HostProcess:
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
        env, root = child_env()
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
        self.dead: HostEnd | None = None
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
        if isinstance(item, HostEnd):
            raise HostGone(item)
        kind, value = item
        if kind == "err":
            raise rebuild_error(value)
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
        sig, exit_code, words = describe_end(code)
        dead = HostEnd(sig, exit_code, words, read_tail(self.log, self.log_offset), self.log)
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


class HostGone(Exception):
    """Raised by ``HostProcess.call`` when the host is gone (turned into ``ModelHostCrashed``)."""

    def __init__(self, dead: HostEnd) -> None:
        super().__init__(dead.words)
        self.dead = dead


__all__ = [
    "CANCEL_GRACE_S",
    "LOG_ROTATE_BYTES",
    "HostEnd",
    "HostGone",
    "HostProcess",
    "child_env",
    "describe_end",
    "log_dir",
    "log_llama",
    "log_path",
    "read_tail",
    "rebuild_error",
    "set_log_llama",
]
