"""``agent-tui generate``: one constrained generation, headless, progress on stderr.

Two forms: ``generate ISSUE`` runs an issue the way the TUI does (``engine.flow.issue_run``:
context, generation, checks, a history entry); ``generate --prompt-file FILE`` sends a prompt
of your own (no checks, no history).

Why a headless command: the same stream of events the TUI's Generating screen shows, for
scripts and CI. The proposal JSON goes to stdout (or ``--out``); progress goes to stderr; the
exit status says what happened (``engine.cli.exitcodes``: truncated, looping, cancelled and
invalid each have their own). Ctrl-C cancels the generation cleanly (within one token) rather
than killing the process mid-decode.

The pieces are reusable by other commands (the issue-aware ``generate ISSUE`` builds its own
messages and calls the same functions): ``run_generation`` drives a backend in a worker thread
and renders progress with ``ProgressRenderer``; ``exit_code`` and ``final_to_json`` turn the
final event into the process's answer; ``write_result`` prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from engine.cli.common import (
    add_json_argument,
    add_repo_argument,
    issue_number,
    load,
    repo_dir,
)
from engine.cli.exitcodes import CANCELLED, ERROR, FAILED_CHECK, INVALID, LOOPING, OK, TRUNCATED
from engine.core.errors import ConfigError
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
from engine.core.models import Issue
from engine.flow.issue_run import IssueRun
from engine.flow.run_events import (
    ContextReady,
    ModelLoading,
    ModelReady,
    RetrySampling,
    Review,
    Reviewed,
)
from engine.flow.session import Workspace
from engine.generate.backends import Backend, GenerationRequest, get_backend
from engine.generate.stream import json_location
from engine.review.checks import has_errors

NAME = "generate"
HELP = "generate a change proposal for an issue (or from a prompt file) with a model profile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "issue",
        nargs="?",
        type=issue_number,
        metavar="ISSUE",
        help="the issue to solve: context, generation, checks, history (like the TUI)",
    )
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--prompt-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="instead of ISSUE, the prompt: plain text (one user message) or a .json list of "
        '{"role", "content"} messages',
    )
    parser.add_argument("--profile", default=None, help="model profile (default: default_model)")
    parser.add_argument(
        "--prompt-profile",
        default=None,
        metavar="NAME",
        help="prompt profile for ISSUE (default: default_prompt)",
    )
    parser.add_argument(
        "--feedback",
        default=None,
        metavar="TEXT",
        help="regenerate ISSUE with this review feedback: the model gets its previous answer "
        "(--previous, default: this issue's latest proposal in the history) and TEXT",
    )
    parser.add_argument(
        "--previous",
        type=issue_number,
        default=None,
        metavar="ID",
        help="with --feedback: the history entry whose proposal is the previous answer",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the result to FILE")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="answer token budget (default: profile's)"
    )


# ------------------------------------------------------------------------------------------
# Reusable pieces


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


def read_prompt_file(path: Path) -> list[dict[str, str]]:
    """Messages from a prompt file: plain text, or a JSON list of role/content messages.

    Raises:
        ConfigError: unreadable, empty, or a malformed message list.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the prompt file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the prompt file {path} is not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"the prompt file {path} is empty")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        ok = (
            isinstance(data, list)
            and data
            and all(
                isinstance(m, dict)
                and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)
                for m in data
            )
        )
        if not ok:
            raise ConfigError(
                f"{path}: expected a list of messages",
                hint='e.g. [{"role": "system", "content": "..."}, {"role": "user", '
                '"content": "..."}]; or use a plain-text file for one user message',
            )
        return [{"role": m["role"], "content": m["content"]} for m in data]
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if (args.issue is None) == (args.prompt_file is None):
        raise ConfigError(
            "name an issue or a prompt file, not both"
            if args.issue is not None
            else "name the issue to solve: agent-tui generate ISSUE",
            hint="or send a prompt of your own with --prompt-file FILE",
        )
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ConfigError("--max-tokens must be at least 1")
    if args.issue is not None:
        return run_issue(args)
    if args.feedback is not None or args.previous is not None:
        raise ConfigError(
            "--feedback and --previous apply to ISSUE only",
            hint="a --prompt-file is sent as it is: put the previous answer and the feedback "
            "in it as messages",
        )
    if args.prompt_profile is not None:
        raise ConfigError(
            "--prompt-profile applies to ISSUE only",
            hint="a --prompt-file is sent as it is",
        )
    config = load(args)
    name = args.profile or config.default_model
    profile = config.profile(name)
    messages = read_prompt_file(args.prompt_file)
    backend = get_backend(name, profile)
    request = GenerationRequest(
        messages=messages,
        max_files=config.generation.max_files,
        max_tokens=args.max_tokens,
    )
    final = run_generation(backend, request, progress=sys.stderr)
    return write_result(
        final, as_json=args.json, out=args.out, stdout=sys.stdout, stderr=sys.stderr
    )


# ------------------------------------------------------------------------------------------
# generate ISSUE


def _previous_answer(args: argparse.Namespace, workspace: Any, run: Any) -> str:
    """Load the answer ``--feedback`` revises into ``run``; returns the feedback text.

    The previous answer is the proposal of history entry ``--previous``, else the latest
    entry of this issue that has one; that entry is marked discarded (still ``generated``
    only), as the TUI does when it regenerates.
    """
    feedback = args.feedback.strip()
    if not feedback:
        raise ConfigError("--feedback is empty", hint="say what the new answer should change")
    store = workspace.store()
    if store is None:
        raise ConfigError("--feedback needs the history, which lives in a git repository")
    if args.previous is not None:
        record = store.generation(args.previous)
        if record is None:
            raise ConfigError(
                f"no generation #{args.previous} in the history",
                hint="`agent-tui history` lists them",
            )
        if record.issue_number != args.issue:
            raise ConfigError(
                f"generation #{record.id} answered issue #{record.issue_number}, not #{args.issue}",
                hint=f"`agent-tui history --issue {args.issue}` lists this issue's",
            )
    else:
        record = next((r for r in store.generations(issue=args.issue) if r.proposal), None)
        if record is None:
            raise ConfigError(
                f"no earlier proposal for issue #{args.issue} in the history",
                hint=f"run `agent-tui generate {args.issue}` first, or pass --previous ID",
            )
    if not record.proposal:
        raise ConfigError(
            f"generation #{record.id} has no proposal (it failed: {record.detail or 'no answer'})",
            hint="pick one with a proposal: `agent-tui history --issue N`",
        )
    run.last_raw = json.dumps(record.proposal, ensure_ascii=False)
    store.set_outcome(record.id, "discarded", only_if="generated")
    print(f"regenerating from generation #{record.id} with your feedback", file=sys.stderr)
    return str(feedback)


def run_issue(args: argparse.Namespace) -> int:
    """``generate ISSUE``: the TUI's run of one issue, headless (``engine.flow.issue_run``).

    The proposal goes to stdout or ``--out``, the findings to stderr; the generation is
    recorded in the history (failures too), so ``agent-tui publish --generation ID`` can
    publish it later with its provenance. Exit status: the generation's (3-6, 7), else 1 when
    an error finding remains, else 0.
    """
    from engine.context.build import repo_root

    root = repo_root(repo_dir(args))
    config = load(args)
    workspace = Workspace(root, config)
    workspace.set_model(args.profile or config.default_model)
    if args.prompt_profile:
        workspace.prompt_name = args.prompt_profile
    source = workspace.issue_source()
    issue = source.get_issue(args.issue)
    comments = list(source.comments(issue.number)) if source.HAS_COMMENTS else []
    run = workspace.start(issue, comments)
    run.max_tokens = args.max_tokens
    feedback = _previous_answer(args, workspace, run) if args.feedback is not None else None
    if feedback is None:
        run.continue_retries()
    reviews: list[Review] = []
    context: dict[str, Any] = {}
    observe = _observer(issue, run, reviews, context)
    final = drive(lambda c: run.generate(c, feedback), progress=sys.stderr, observe=observe)
    review = reviews[0] if reviews and isinstance(final, Finished) else None
    about = {
        "issue": issue.number,
        "issue_title": issue.title,
        "model_profile": run.model_name,
        "prompt_profile": run.prompt_name,
    }
    if review is None:
        return _unreviewed(args, final, about, context)
    return _reviewed(args, final, review, about, context)


def _observer(
    issue: Issue, run: IssueRun, reviews: list[Review], context: dict[str, Any]
) -> Callable[[Any], None]:
    """What ``generate ISSUE`` says on stderr of the session's events; it keeps the review
    in ``reviews`` and the prompt's figures in ``context``."""
    err = sys.stderr

    def observe(event: Any) -> None:
        if isinstance(event, ModelLoading):
            print(f"loading model {event.name}...", file=err, flush=True)
        elif isinstance(event, ModelReady):
            print(f"model {event.name} ready in {event.seconds:.1f}s", file=err, flush=True)
        elif isinstance(event, RetrySampling):
            print(event.describe(), file=err, flush=True)
        elif isinstance(event, ContextReady):
            ctx = event.context
            context.update(
                total_tokens=ctx.total_tokens,
                budget=ctx.budget,
                shown_files=sorted(ctx.shown_files),
                left_out=len(ctx.left_out),
            )
            print(
                f"#{issue.number} {issue.title}: prompt {ctx.total_tokens}/{ctx.budget} tokens, "
                f"{len(ctx.shown)} file(s) shown, {len(ctx.left_out)} left out "
                f"(model {run.model_name}, prompt profile {run.prompt_name})",
                file=err,
                flush=True,
            )
        elif isinstance(event, Reviewed):
            reviews.append(event.review)

    return observe


def _unreviewed(
    args: argparse.Namespace, final: FinalEvent, about: dict[str, Any], context: dict[str, Any]
) -> int:
    """The answer of a generation that ended without a proposal (failed or cancelled)."""
    err = sys.stderr
    if args.json and isinstance(final, GenerationFailed):
        print(f"{final.kind}: {final.message}", file=err)
        if final.hint:
            print(f"  hint: {final.hint}", file=err)
        data = {**final_to_json(final), **about, "context": context}
        _emit(json.dumps(data, indent=2, ensure_ascii=False), args.out)
        code = exit_code(final)
    else:
        code = write_result(final, as_json=args.json, out=args.out, stdout=sys.stdout, stderr=err)
    if not isinstance(final, Cancelled):
        print("  recorded in `agent-tui history`", file=err)
    return code


def _reviewed(
    args: argparse.Namespace,
    final: FinalEvent,
    review: Review,
    about: dict[str, Any],
    context: dict[str, Any],
) -> int:
    """The answer of a checked proposal: findings on stderr, the proposal (or JSON) out."""
    err = sys.stderr
    for finding in review.findings:
        print(finding.render(), file=err)
    counts = {
        s: sum(1 for f in review.findings if f.severity == s) for s in ("error", "warning", "info")
    }
    status = FAILED_CHECK if has_errors(review.findings) else OK
    where = f"history #{review.generation_id}" if review.generation_id else "not recorded"
    print(
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"
        f" — {review.diff.summary()} — {where}",
        file=err,
    )
    if args.json:
        data = final_to_json(final)
        data.update(
            {
                **about,
                "generation_id": review.generation_id,
                "ok": status == OK,
                "counts": counts,
                "findings": [f.to_dict() for f in review.findings],
                "diff": review.diff.to_dict(),
                "context": context,
            }
        )
        text = json.dumps(data, indent=2, ensure_ascii=False)
    else:
        text = review.proposal.model_dump_json(indent=2)
    _emit(text, args.out)
    return status


def _emit(text: str, out: Path | None) -> None:
    """The command's answer: to ``--out`` (saying so on stderr) or stdout."""
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
        print(f"written to {out}", file=sys.stderr)
    else:
        print(text)
