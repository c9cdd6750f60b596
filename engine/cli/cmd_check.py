"""``agent-tui check``: the findings and the diff summary of a proposal file, headless.

Why: the same checks the TUI shows before publishing, for scripts and CI: exit status 1 when
an error finding remains, so a pipeline can refuse a proposal; ``--fix`` applies the
deterministic fixes and prints the fixed proposal so it can be saved and re-checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.cli.common import (
    add_json_argument,
    add_repo_argument,
    bounded_int,
    load,
    repo_dir,
)
from engine.cli.exitcodes import FAILED_CHECK, OK
from engine.context.prompts import load_profile
from engine.core.errors import ConfigError
from engine.core.proposal_io import load_proposal_file, proposal_to_data
from engine.review.checks.fixes import apply_fixes
from engine.review.checks.orchestrator import run_checks
from engine.review.checks.registry import CheckLimits, enabled_for_profile, has_errors
from engine.review.diff import RepoBase, diff_proposal

NAME = "check"
HELP = "check a proposal JSON file: findings (safety + the prompt's rules) and the diff summary"


def _issue_number(text: str) -> int:
    """An issue number as ``check --issue`` reads it (digits only, no leading ``#``)."""
    return bounded_int(text, what="an issue number", too_small="the issue number must be 1 or more")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proposal", type=Path, metavar="PROPOSAL.json", help="the proposal file")
    parser.add_argument(
        "--issue",
        type=_issue_number,
        required=True,
        metavar="N",
        help="the issue the proposal answers (for 'Closes #N')",
    )
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--fix",
        action="store_true",
        help="apply the deterministic fixes and print the fixed proposal JSON "
        "(findings go to stderr, or into the --json object)",
    )
    parser.add_argument(
        "--base",
        default="HEAD",
        metavar="REF",
        help="the git ref the proposal is compared with (default: HEAD)",
    )
    parser.add_argument(
        "--prompt-profile",
        metavar="NAME",
        help="the prompt profile whose rules apply (default: default_prompt); the safety "
        "checks always run",
    )
    parser.add_argument(
        "--shown",
        action="append",
        metavar="PATH",
        help="a file the model was shown (repeatable); enables the unseen-file rule",
    )


def run(args: argparse.Namespace) -> int:
    repo = repo_dir(args)
    if not repo.is_dir():
        raise ConfigError(f"{repo} is not a directory", hint="pass the repository with --repo")
    proposal = load_proposal_file(args.proposal)
    config = load(args)
    limits = CheckLimits.from_config(config)
    prompt = load_profile(args.prompt_profile or config.default_prompt, repo)
    if args.fix:
        proposal = apply_fixes(proposal, args.issue)
    base = RepoBase(repo, args.base)
    findings = run_checks(
        proposal,
        repo,
        args.issue,
        shown_files=set(args.shown) if args.shown is not None else None,
        limits=limits,
        base=base,
        enabled=enabled_for_profile(prompt.checks),
    )
    diff = diff_proposal(proposal, base=base)
    status = FAILED_CHECK if has_errors(findings) else OK
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    if args.json:
        out: dict[str, Any] = {
            "ok": status == OK,
            "counts": counts,
            "findings": [f.to_dict() for f in findings],
            "diff": diff.to_dict(),
        }
        if args.fix:
            out["fixed_proposal"] = proposal_to_data(proposal)
        print(json.dumps(out, indent=2))
        return status
    report = sys.stderr if args.fix else sys.stdout
    for finding in findings:
        print(finding.render(), file=report)
    verdict = "blocked: fix the errors before publishing" if status else "publishable"
    if counts["warning"] and not status:
        verdict += " after acknowledging the warnings"
    print(
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"
        f" — {verdict}",
        file=report,
    )
    print(diff.summary(), file=report)
    if args.fix:
        print(json.dumps(proposal_to_data(proposal), indent=2, ensure_ascii=False))
    return status
