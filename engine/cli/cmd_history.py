"""``agent-tui history``: every generation with its outcome, and the outbox's jobs.

Why: a proposal is never lost: each generation (issue, model and prompt profiles, prompt hash,
proposal, findings, stats) is stored with what became of it (generated, discarded, published,
queued, failed); ``--show ID`` prints one in full, including the proposal JSON, so it can be
published again with ``agent-tui publish``.
"""

from __future__ import annotations

import argparse
import json

from engine.cli.common import add_json_argument, add_repo_argument, positive_int, repo_dir
from engine.cli.exitcodes import OK
from engine.core.errors import AgentTuiError
from engine.core.gitcmd import toplevel
from engine.core.textsafe import safe
from engine.publish.records import OUTCOMES
from engine.publish.store import Store

NAME = "history"
HELP = "list past generations and their outcome; --jobs lists the publish outbox"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--issue", type=positive_int, metavar="N", help="only generations for issue N"
    )
    parser.add_argument("--outcome", choices=OUTCOMES, help="only generations with this outcome")
    parser.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="at most N (50)"
    )
    parser.add_argument("--show", type=positive_int, metavar="ID", help="one generation in full")
    parser.add_argument("--jobs", action="store_true", help="list the publish jobs instead")


def run(args: argparse.Namespace) -> int:
    store = Store.for_repo(toplevel(repo_dir(args)))
    if args.show is not None:
        record = store.generation(args.show)
        if record is None:
            raise AgentTuiError(
                f"no generation #{args.show}",
                title="Not in history",
                hint="run `agent-tui history`",
            )
        print(json.dumps(record.to_json(), indent=2))
        return OK
    if args.jobs:
        jobs = store.jobs()
        if args.json:
            print(json.dumps([j.__dict__ for j in jobs], indent=2, default=str))
            return OK
        for j in jobs:
            where = j.pr_url or j.last_error or ""
            print(
                f"job {j.id:<4} {j.created_at} #{j.issue_number:<5} {j.status:<9} "
                f"{j.state:<9} {safe(j.branch)}  {safe(where)}"
            )
        if not jobs:
            print("no publish jobs")
        return OK
    records = store.generations(limit=args.limit, issue=args.issue, outcome=args.outcome)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return OK
    for r in records:
        title = r.issue_title or (r.proposal or {}).get("pr_title", "")
        errors = sum(1 for f in r.findings if str(f.get("severity", "")).endswith("error"))
        extra = r.pr_url or r.detail
        print(
            f"{r.id:<5} {r.created_at} #{r.issue_number or '-':<5} {r.outcome:<10} "
            f"{r.model_profile or '-'}/{r.prompt_profile or '-'} "
            f"{errors} err  {safe(title)}" + (f"  — {safe(extra)}" if extra else "")
        )
    if not records:
        print("no generations recorded yet")
    return OK
