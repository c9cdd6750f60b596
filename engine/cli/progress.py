"""Driving a generation's event stream from the command line: progress, Ctrl-C, the answer.

Why apart from ``cmd_generate``: ``generate --prompt-file``, ``generate ISSUE`` and other
commands share these pieces. ``drive`` consumes an event stream in a worker thread and renders
progress with ``ProgressRenderer`` (Ctrl-C cancels the generation cleanly, within one token,
rather than killing the process mid-decode); ``run_generation`` does it for a backend;
``exit_code`` and ``final_to_json`` turn the final event into the process's answer;
``write_result`` prints it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from engine.cli.exitcodes import CANCELLED, ERROR, INVALID, LOOPING, OK, TRUNCATED
from engine.core.events import (
    Cancelled,
    FinalEvent,
    Finished,
    GenerationEvent,
    GenerationFailed,
    InvalidAnswer,
    Looping,
    PromptProcessed,
    ProposalUpdated,
    TokensGenerated,
    Truncated,
)
from engine.generate.backends import Backend, GenerationRequest
from engine.generate.stream import json_location


class ProgressRenderer:
    """Turns generation events into one short progress line.

    ``update`` returns the line to show now, or None when nothing worth showing changed
    (lines are throttled to ``interval_s``; prompt and final events always render).
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.prompt = ""
        self.tokens = 0
        self.rate = 0.0
        self.where = "(start)"
        self.files = 0
        self._last = 0.0

    def update(self, event: GenerationEvent) -> str | None:
        """The progress line after ``event``, if due."""
        now = time.monotonic()
        if isinstance(event, PromptProcessed):
            cached = f", {event.cached_prompt_tokens} cached" if event.cached_prompt_tokens else ""
            self.prompt = f"prompt {event.prompt_tokens} tok{cached} in {event.seconds:.2f}s"
            self._last = now
            return self.line()
        if isinstance(event, TokensGenerated):
            self.tokens = event.completion_tokens
            self.rate = event.tokens_per_s
        elif isinstance(event, ProposalUpdated):
            self.where = json_location(event.partial)
            files = event.partial.get("files")
            self.files = len(files) if isinstance(files, list) else 0
        elif isinstance(event, Finished | GenerationFailed):
            return self.final_line(event)
        if now - self._last >= self.interval_s:
            self._last = now
            return self.line()
        return None

    def line(self) -> str:
        """The current progress line."""
        parts = [p for p in (self.prompt,) if p]
        if self.tokens:
            parts.append(f"{self.tokens} tok at {self.rate:.1f} tok/s")
            parts.append(f"{self.files} file(s) so far, writing {self.where}")
        return " | ".join(parts) or "processing the prompt..."

    @staticmethod
    def final_line(event: FinalEvent) -> str:
        """One line summing up the final event."""
        s = event.stats
        nums = (
            f"{s.completion_tokens} tok, {s.tokens_per_s:.1f} tok/s, TTFT {s.ttft_s:.2f}s, "
            f"{s.elapsed_s:.1f}s"
        )
        if isinstance(event, Finished):
            files = len(event.proposal.files)
            return f"done: {files} file(s), {nums}"
        return f"stopped, {event.kind} ({nums})"


def exit_code(event: FinalEvent) -> int:
    """The process exit status for a final event (``engine.cli.exitcodes``)."""
    if isinstance(event, Finished):
        return OK
    if isinstance(event, Truncated):
        return TRUNCATED
    if isinstance(event, Looping):
        return LOOPING
    if isinstance(event, Cancelled):
        return CANCELLED
    if isinstance(event, InvalidAnswer):
        return INVALID
    return ERROR


def final_to_json(event: FinalEvent) -> dict[str, Any]:
    """A JSON-able summary of a final event: ``status``, the proposal or what was produced."""
    stats = asdict(event.stats)
    if isinstance(event, Finished):
        return {
            "status": "finished",
            "proposal": event.proposal.model_dump(mode="json"),
            "stats": stats,
        }
    out: dict[str, Any] = {
        "status": event.kind,
        "message": event.message,
        "hint": event.hint,
        "partial": event.partial,
        "raw": event.raw,
        "stats": stats,
    }
    for extra in ("limit", "where", "errors", "prompt_tokens", "n_ctx", "reserved"):
        if hasattr(event, extra):
            value = getattr(event, extra)
            out[extra] = list(value) if isinstance(value, tuple) else value
    return out


def run_generation(
    backend: Backend,
    request: GenerationRequest,
    *,
    progress: TextIO | None = None,
    cancel: threading.Event | None = None,
) -> FinalEvent:
    """Run one generation in a worker thread, rendering progress; Ctrl-C cancels it.

    Args:
        backend: the model backend.
        request: what to generate.
        progress: where progress lines go (stderr); None for silence.
        cancel: an event to cancel from elsewhere (one is made if None).

    Returns:
        The final event (``Finished`` or a ``GenerationFailed``).
    """
    return drive(lambda c: backend.generate(request, c), progress=progress, cancel=cancel)


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``cancel`` while the block runs; a second Ctrl-C quits at once.

    Why a handler: Ctrl-C must set the cancel event wherever the main thread is (waiting for
    an event or rendering one), not only inside ``events.get``: a KeyboardInterrupt raised
    while an event is handled would escape and leave the generation running (exit 130, not 5).
    Outside the main thread no handler can be set; ``drive`` catches the interrupt itself.
    """
    previous_handler: Any = None
    if threading.current_thread() is threading.main_thread():

        def on_sigint(_signum: int, _frame: Any) -> None:
            if cancel.is_set():  # a second Ctrl-C: quit now, without waiting for the engine
                raise KeyboardInterrupt
            cancel.set()

        previous_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)


def _show(line: str | None, item: Any, final: bool, progress: TextIO | None, tty: bool) -> None:
    """A progress line: redrawn in place on a terminal, else only the milestones."""
    if line is None or progress is None:
        return
    if tty:
        print(f"\r\x1b[2K{line}", end="\n" if final else "", file=progress, flush=True)
    elif final or isinstance(item, PromptProcessed):
        print(line, file=progress, flush=True)


def drive(
    start: Callable[[threading.Event], Iterable[Any]],
    *,
    progress: TextIO | None = None,
    cancel: threading.Event | None = None,
    observe: Callable[[Any], None] | None = None,
) -> FinalEvent:
    """Consume an event stream in a worker thread, rendering progress; Ctrl-C cancels it.

    Args:
        start: given the cancel event, returns the events (``Backend.generate`` or
            ``IssueRun.generate``); it is iterated to its end in the worker thread.
        progress: where progress lines go (stderr); None for silence.
        cancel: an event to cancel from elsewhere (one is made if None).
        observe: called in the calling thread with every event (session events included).

    Returns:
        The final event (``Finished`` or a ``GenerationFailed``).
    """
    cancel = cancel or threading.Event()
    events: queue.Queue[Any] = queue.Queue()

    def worker() -> None:
        try:
            for ev in start(cancel):
                events.put(ev)
        except BaseException as exc:  # handed to the main thread, raised there
            events.put(exc)
        finally:
            events.put(None)

    thread = threading.Thread(target=worker, name="agent-tui-generate", daemon=True)
    renderer = ProgressRenderer()
    tty = bool(progress is not None and progress.isatty())
    final: FinalEvent | None = None
    error: BaseException | None = None
    said_cancelling = False
    with _ctrl_c_cancels(cancel):
        thread.start()
        while True:
            if cancel.is_set() and not said_cancelling:
                said_cancelling = True
                if progress is not None:
                    print("\ncancelling... (Ctrl-C again quits at once)", file=progress, flush=True)
            try:
                item = events.get(timeout=0.1)
            except queue.Empty:
                continue
            except KeyboardInterrupt:  # no handler of ours (not the main thread)
                cancel.set()
                continue
            if item is None:
                break
            if isinstance(item, BaseException):
                error = item
                continue
            if observe is not None:
                observe(item)
            if not isinstance(item, GenerationEvent):
                continue
            if isinstance(item, Finished | GenerationFailed):
                final = item
            _show(renderer.update(item), item, item is final, progress, tty)
    thread.join()
    if error is not None:
        raise error
    if final is None:
        raise RuntimeError("the backend ended its stream without a final event")
    return final


def write_result(
    event: FinalEvent, *, as_json: bool, out: Path | None, stdout: TextIO, stderr: TextIO
) -> int:
    """Print or save the result of a generation; returns the exit status.

    Success writes the proposal JSON (``--json``: the summary with stats) to ``out`` or
    stdout. A failure prints its message and hint to stderr; with ``--json`` the summary
    (partial proposal and raw text included) still goes to ``out``/stdout, and without it the
    raw answer is kept in ``OUT.partial`` when ``out`` is given, so nothing is lost.
    """
    code = exit_code(event)
    if as_json:
        text = json.dumps(final_to_json(event), indent=2, ensure_ascii=False)
    elif isinstance(event, Finished):
        text = event.proposal.model_dump_json(indent=2)
    else:
        text = ""
    if isinstance(event, GenerationFailed):
        print(f"{event.kind}: {event.message}", file=stderr)
        if event.hint:
            print(f"  hint: {event.hint}", file=stderr)
    if text:
        if out is not None:
            out.write_text(text + "\n", encoding="utf-8")
        else:
            print(text, file=stdout)
    elif out is not None and isinstance(event, GenerationFailed) and event.raw:
        keep = out.with_name(out.name + ".partial")
        keep.write_text(event.raw, encoding="utf-8")
        print(f"  the answer so far is in {keep}", file=stderr)
    return code
