"""``agent-tui publish``: a proposal file -> branch, commit, push and pull request.

Why headless: the TUI's publish screen and scripts share one path (``engine.publish``). The
checks run first and any error finding refuses the publish (exit status 1); the plan is
printed, and on a terminal the user must type ``yes`` (a bare Enter never publishes); without
a terminal ``--yes`` is required. A network failure queues the job in the outbox (exit 8,
``agent-tui sync`` retries it); GitHub's and git's refusals are printed in their own words.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from engine.cli.common import (
    add_json_argument,
    add_repo_argument,
    load,
    positive,
    repo_dir,
)
from engine.cli.exitcodes import CANCELLED, ERROR, FAILED_CHECK, OK, QUEUED
from engine.context.prompts import load_profile
from engine.core.config import AppConfig
from engine.core.errors import AgentTuiError, PublishError
from engine.core.gitcmd import toplevel
from engine.core.models import ChangeProposal
from engine.core.proposal_io import load_proposal_file
from engine.issues.forge.registry import issue_source_for
from engine.publish.plan import BranchChoice, PublishPlan, build_plan
from engine.publish.provenance import Provenance, model_ref_for, provenance_from_history
from engine.publish.runner import execute
from engine.publish.steps import PublishProgress, PublishResult
from engine.publish.store import Store
from engine.review.checks.orchestrator import run_checks
from engine.review.checks.registry import CheckLimits, Finding, enabled_for_profile, has_errors

NAME = "publish"
HELP = "publish a proposal JSON file: branch, commit, push and pull request (asks first)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proposal", type=Path, metavar="PROPOSAL.json", help="the proposal file")
    parser.add_argument(
        "--issue", type=positive, required=True, metavar="N", help="the issue it closes"
    )
    add_repo_argument(parser)
    add_json_argument(parser)
    draft = parser.add_mutually_exclusive_group()
    draft.add_argument(
        "--draft",
        dest="draft",
        action="store_true",
        default=None,
        help="open the pull request as a draft (default: [publish] draft)",
    )
    draft.add_argument(
        "--ready", dest="draft", action="store_false", help="open the pull request ready for review"
    )
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask for confirmation (required without a terminal)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="L",
        help="add this label to the pull request (repeatable)",
    )
    parser.add_argument(
        "--base",
        metavar="BRANCH",
        help="base branch (default: [publish] base, else GitHub's default)",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--new-branch",
        dest="on_existing",
        action="store_const",
        const="new",
        help="if the branch exists, publish on the next free suffix (-2, -3...)",
    )
    existing.add_argument(
        "--update-branch",
        dest="on_existing",
        action="store_const",
        const="update",
        help="if the branch exists, commit on top of it and reuse its PR",
    )
    parser.add_argument("--no-tests", action="store_true", help="skip [publish] test_command")
    parser.add_argument(
        "--tests-in-body",
        action="store_true",
        default=None,
        help="append the test result to the pull request body",
    )
    parser.add_argument(
        "--generation",
        type=positive,
        metavar="ID",
        help="the history entry the proposal came from (its provenance "
        "goes into the commit trailers, its outcome is updated)",
    )
    parser.add_argument(
        "--model",
        "--profile",
        dest="model",
        metavar="PROFILE",
        help="model profile that produced it",
    )
    parser.add_argument(
        "--prompt",
        "--prompt-profile",
        dest="prompt",
        metavar="PROFILE",
        help="prompt profile that produced it",
    )
    parser.add_argument("--seed", type=int, help="the sampling seed used")


def _generation_of(store: Store, issue: int, proposal: dict[str, object]) -> int | None:
    """The latest history entry of ``issue`` holding this very proposal (None: none)."""
    for record in store.generations(limit=200, issue=issue):
        if proposal in (record.proposal, record.edited):
            return record.id
    return None


def _issue_title(repo: Path, config: AppConfig, number: int) -> str:
    """The issue's title from the issue cache or local files (no network; "" unknown)."""
    try:
        issues = issue_source_for(repo, config).list_issues()
    except AgentTuiError:
        return ""
    return next((i.title for i in issues if i.number == number), "")


def _ask(question: str) -> str:
    try:
        return input(question).strip().lower()
    except EOFError:
        return ""


def _provenance(
    args: argparse.Namespace, config: AppConfig, store: Store, proposal: ChangeProposal
) -> Provenance:
    """Model, prompt and seed for the trailers: from the history entry, else the options."""
    if not args.generation:
        # a proposal file written by `generate` (or saved from the history) is in the history:
        # its entry gives the model, the prompt and the issue title
        args.generation = _generation_of(store, args.issue, proposal.model_dump())
    if args.generation:
        return provenance_from_history(store, args.generation, config)
    model_ref = model_ref_for(config.profile(args.model), store) if args.model else ""
    return Provenance(args.model or "", model_ref, args.prompt or "", "", args.seed)


def _findings(
    args: argparse.Namespace,
    config: AppConfig,
    repo: Path,
    proposal: ChangeProposal,
    provenance: Provenance,
) -> list[Finding]:
    """The checks' findings (printed on stderr), with the rules of the prompt profile that
    produced the proposal (as the TUI and generate applied them)."""
    prompt_name = args.prompt or provenance.prompt_profile or config.default_prompt
    findings = run_checks(
        proposal,
        repo,
        args.issue,
        limits=CheckLimits.from_config(config),
        enabled=enabled_for_profile(load_profile(prompt_name, repo).checks),
    )
    for finding in findings:
        print(finding.render(), file=sys.stderr)
    return findings


def _refused(args: argparse.Namespace, findings: list[Finding]) -> int:
    """The answer when error findings remain: nothing is published."""
    count = sum(1 for f in findings if f.severity == "error")
    print(
        f"refusing to publish: {count} error finding(s) remain "
        "(`agent-tui check --fix` fixes some)",
        file=sys.stderr,
    )
    if args.json:
        refused = {
            "ok": False,
            "status": "refused",
            "findings": [f.to_dict() for f in findings],
        }
        print(json.dumps(refused, indent=2))
    return FAILED_CHECK


def _chosen(
    plan_for: Callable[[BranchChoice | None], PublishPlan],
    on_existing: BranchChoice | None,
    interactive: bool,
) -> PublishPlan:
    """The plan, with the user's answer when the branch exists and no option chose."""
    plan = plan_for(on_existing)
    if plan.branch_conflict and interactive:
        answer = _ask(
            f"branch {plan.branch} already exists: [n]ew branch {plan.suggested_branch}, "
            "[u]pdate it (commit on top), or [a]bort? "
        )
        if answer in ("n", "new"):
            plan = plan_for("new")
        elif answer in ("u", "update"):
            plan = plan_for("update")
    return plan


def _answer(args: argparse.Namespace, result: PublishResult) -> int:
    """The pull request's URL (or the JSON, or why not) and the exit status."""
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    elif result.published:
        print(result.pr_url)
    elif result.queued:
        print(
            f"{result.message}\nthe branch is kept; {result.hint}, then `agent-tui sync` sends it",
            file=sys.stderr,
        )
    else:
        print(result.message, file=sys.stderr)
    if result.published:
        return OK
    if result.queued:
        return QUEUED
    if result.status == "cancelled":
        return CANCELLED
    return ERROR


def run(args: argparse.Namespace) -> int:
    config = load(args)
    repo = toplevel(repo_dir(args))
    proposal = load_proposal_file(args.proposal)
    store = Store.for_repo(repo)
    provenance = _provenance(args, config, store, proposal)
    findings = _findings(args, config, repo, proposal, provenance)
    if has_errors(findings):
        return _refused(args, findings)
    interactive = sys.stdin.isatty() and not args.json

    def plan_for(choice: BranchChoice | None) -> PublishPlan:
        return build_plan(
            repo,
            config,
            proposal,
            args.issue,
            findings=findings,
            provenance=provenance,
            generation_id=args.generation,
            draft=args.draft,
            labels=args.label,
            base=args.base,
            on_existing=choice,
            run_tests=False if args.no_tests else None,
            tests_in_body=args.tests_in_body,
            issue_title=_issue_title(repo, config, args.issue),
        )

    plan = _chosen(plan_for, args.on_existing, interactive)
    print(plan.describe(), file=sys.stderr)
    if not plan.ready:
        raise PublishError(
            "cannot publish: " + "; ".join(plan.errors),
            hint="--new-branch or --update-branch resolves an existing branch"
            if plan.branch_conflict
            else "",
        )
    if not args.yes:
        if not interactive:
            raise PublishError(
                "refusing to publish without confirmation: stdin is not a terminal",
                hint="pass --yes to publish from a script",
            )
        if _ask("Publish? type 'yes' to push and open the pull request: ") not in ("y", "yes"):
            print("not published", file=sys.stderr)
            return CANCELLED

    def show(p: PublishProgress) -> None:
        print(f"  {p.step:<13} {p.state:<8} {p.detail}", file=sys.stderr)

    result = execute(plan, progress=show)
    return _answer(args, result)
