"""``agent-tui sync``: retry the publish jobs waiting in the outbox.

Why: a publish that met a network failure (or was killed) left its commit on a local branch
and a pending job; this resumes each job at the step it reached, without duplicating a push
or a pull request. Exit status 0 when every job is done, 8 when some are still queued, 7 when
one failed (GitHub's or git's message is printed; ``--all`` retries failed jobs too).
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import add_json_argument, add_repo_argument, load, repo_dir
from engine.cli.exitcodes import ERROR, OK, QUEUED
from engine.core.textsafe import safe
from engine.publish.runner import sync
from engine.publish.steps import PublishProgress

NAME = "sync"
HELP = "retry the publish jobs waiting in the outbox (push, pull request, labels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--all", action="store_true", help="also retry failed jobs (after fixing the cause)"
    )


def run(args: argparse.Namespace) -> int:
    config = load(args)

    def show(p: PublishProgress) -> None:
        if not args.json:
            print(f"  {p.step:<13} {p.state:<8} {p.detail}", file=sys.stderr)

    results = sync(repo_dir(args), config, include_failed=args.all, progress=show)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    elif not results:
        print("the outbox is empty: nothing to sync")
    for r in results:
        if not args.json:
            print(f"job {r.job_id} #{r.issue} {safe(r.branch)}: {r.status} — {r.message}")
            if r.queued:  # still waiting: what to do before the next try (never "run sync")
                print(f"  still in the outbox: {r.hint}, then run this again")
    if any(r.status == "failed" for r in results):
        return ERROR
    if any(r.status == "pending" for r in results):
        return QUEUED
    return OK
