"""``agent-tui batch``: proposals (and optionally draft PRs) for many issues in one run.

Why: "a draft PR for every ``good-first-issue``" overnight on a served model, and the same in
CI. The work is ``engine.flow.batch`` (the TUI's steps per issue, K at once on a server backend,
resumable from the history database); this module parses flags, asks before publishing on a
terminal, shows progress on stderr and prints the summary table (or ``--json``) on stdout.
Ctrl-C cancels the running generations cleanly; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from engine.cli.common import (
    MAX_NUMBER,
    add_json_argument,
    add_repo_argument,
    load,
    positive,
    repo_dir,
)
from engine.cli.exitcodes import CANCELLED, FAILED_CHECK, INTERRUPTED, OK, QUEUED
from engine.core.errors import ConfigError
from engine.core.gitcmd import toplevel
from engine.flow.batch import run_batch
from engine.flow.batch_items import (
    PUBLISH_MODES,
    BatchOptions,
    BatchProgress,
    BatchSummary,
    ItemState,
)
from engine.flow.session import Workspace
from engine.issues.forge.registry import github_repo_for

NAME = "batch"
HELP = "generate (and optionally publish as drafts) for many issues; resumable"


def _issue_list(text: str) -> list[int]:
    numbers: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            value = int(part.lstrip("#"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not an issue number (expected e.g. 3,5,8)"
            ) from None
        if not 1 <= value <= MAX_NUMBER:
            raise argparse.ArgumentTypeError(f"issue numbers are 1 to {MAX_NUMBER}")
        numbers.append(value)
    if not numbers:
        raise argparse.ArgumentTypeError("name at least one issue, e.g. 3,5,8")
    return numbers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    select = parser.add_mutually_exclusive_group()
    select.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="L",
        help="every open issue with this label (repeatable: all must match)",
    )
    select.add_argument(
        "--issues", type=_issue_list, metavar="3,5,8", help="these issues, in this order"
    )
    parser.add_argument(
        "--concurrency",
        type=positive,
        metavar="K",
        help="generations at once on a server backend (default and upper bound: the "
        "profile's concurrency; llama.cpp in-process always runs one at a time)",
    )
    parser.add_argument(
        "--publish",
        choices=PUBLISH_MODES,
        default="none",
        help="draft: open a draft pull request for each proposal without error findings "
        "(default: none, proposals go to the history only)",
    )
    parser.add_argument("--profile", default=None, help="model profile (default: default_model)")
    parser.add_argument(
        "--prompt-profile",
        default=None,
        metavar="NAME",
        help="prompt profile (default: default_prompt)",
    )
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="with --publish draft: do not ask for confirmation (required without a terminal)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new batch instead of continuing the same one (default: continue it; "
        "a finished batch then does nothing)",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="when resuming, generate again the issues whose generation failed",
    )


class _Progress:
    """Progress on stderr: a line per issue started/finished; a live line on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()
        self.live: dict[int, str] = {}

    def __call__(self, p: BatchProgress) -> None:
        with self.lock:
            if p.kind == "tokens" and p.issue is not None:
                self.live[p.issue] = f"#{p.issue} {p.tokens} tok {p.tokens_per_s:.1f} tok/s"
                self.live[p.issue] += f" {p.files} file(s)"
                if self.tty:
                    line = " | ".join(self.live.values())
                    print(f"\r\x1b[2K{line[:200]}", end="", file=sys.stderr, flush=True)
                return
            text = ""
            if p.kind == "note":
                text = p.message
            elif p.kind == "started" and p.item is not None:
                text = f"#{p.item.issue_number} started: {p.item.issue_title}"
            elif p.kind == "finished" and p.item is not None:
                self.live.pop(p.item.issue_number, None)
                item = p.item
                rate = f", {item.tokens_per_s:.1f} tok/s" if item.tokens_per_s else ""
                text = f"#{item.issue_number} {item.state}{rate}, {item.seconds:.1f}s"
                if item.generation_id:
                    text += f", {item.errors} error(s) {item.warnings} warning(s)"
                if item.pr_url or item.detail:
                    text += f" — {item.pr_url or item.detail}"
            if text:
                prefix = "\r\x1b[2K" if self.tty else ""
                print(prefix + text, file=sys.stderr, flush=True)


def _confirm(args: argparse.Namespace, where: str) -> bool:
    if args.publish != "draft" or args.yes:
        return True
    if not sys.stdin.isatty() or args.json:
        raise ConfigError(
            "refusing to publish without confirmation: stdin is not a terminal",
            hint="pass --yes to open draft pull requests from a script",
        )
    try:
        answer = input(
            f"Open a draft pull request on {where} for each issue whose proposal has no error "
            "finding? type 'yes': "
        )
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def exit_status(summary: BatchSummary) -> int:
    """0: every issue reached its goal; 130: interrupted (resumable); 8: only queued
    publishes remain; 1: some issue failed, was blocked, or has error findings."""
    if summary.interrupted:
        return INTERRUPTED
    if summary.ok:
        return OK
    goal = ItemState.PUBLISHED if summary.publish == "draft" else ItemState.GENERATED
    rest = [i for i in summary.items if i.state != goal or i.errors]
    if rest and all(i.state == ItemState.QUEUED for i in rest):
        return QUEUED
    return FAILED_CHECK


def run(args: argparse.Namespace) -> int:
    root = toplevel(repo_dir(args))
    config = load(args)
    options = BatchOptions(
        issues=args.issues,
        labels=list(args.label),
        publish=args.publish,
        concurrency=args.concurrency,
        model=args.profile,
        prompt=args.prompt_profile,
        fresh=args.fresh,
        retry_failed=args.retry_failed,
    )
    options.selector()  # neither/both selections: an error before anything else
    workspace = Workspace(root, config)
    if args.publish == "draft":
        github = github_repo_for(root, config)
        if not _confirm(args, github.full_name if github else f"remote {config.publish.remote}"):
            print("nothing published", file=sys.stderr)
            return CANCELLED
    cancel = threading.Event()
    progress = _Progress()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["summary"] = run_batch(workspace, options, progress=progress, cancel=cancel)
        except BaseException as exc:  # handed to the main thread, raised there
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=work, name="agent-tui-batch", daemon=True)
    thread.start()
    # wait on an event, not on thread.join(): on Python 3.11 a Ctrl-C that interrupts join()
    # marks the still-running thread as stopped (is_alive() turns False), and the summary was
    # read before the cancelled batch had written it (a KeyError traceback instead of 130)
    while not done.is_set():
        try:
            done.wait(timeout=0.5)
        except KeyboardInterrupt:
            if not cancel.is_set():
                print("\ncancelling (rerun the same command to resume)...", file=sys.stderr)
            cancel.set()
    if "error" in outcome:
        raise outcome["error"]
    summary: BatchSummary = outcome["summary"]
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(summary.table())
        if summary.interrupted:
            print("interrupted: rerun the same command to resume", file=sys.stderr)
    return exit_status(summary)
