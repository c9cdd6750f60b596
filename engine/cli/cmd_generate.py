"""``agent-tui generate``: one constrained generation, headless, progress on stderr.

Two forms: ``generate ISSUE`` runs an issue the way the TUI does (``engine.flow.issue_run``:
context, generation, checks, a history entry); ``generate --prompt-file FILE`` sends a prompt
of your own (no checks, no history).

Why a headless command: the same stream of events the TUI's Generating screen shows, for
scripts and CI. The proposal JSON goes to stdout (or ``--out``); progress goes to stderr; the
exit status says what happened (``engine.cli.exitcodes``: truncated, looping, cancelled and
invalid each have their own). Ctrl-C cancels the generation cleanly (within one token) rather
than killing the process mid-decode.

The reusable pieces (driving a stream with progress and Ctrl-C, the exit status, the JSON
answer) are in ``engine.cli.progress``; both forms use them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli.common import (
    add_json_argument,
    add_repo_argument,
    issue_number,
    load,
    repo_dir,
)
from engine.cli.exitcodes import FAILED_CHECK, OK
from engine.cli.progress import drive, exit_code, final_to_json, run_generation, write_result
from engine.core.errors import ConfigError
from engine.core.events import (
    Cancelled,
    FinalEvent,
    Finished,
    GenerationFailed,
)
from engine.core.gitcmd import toplevel
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
from engine.generate.backends import GenerationRequest, get_backend
from engine.review.checks.registry import has_errors

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

    root = toplevel(repo_dir(args))
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
