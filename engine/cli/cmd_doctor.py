"""``agent-tui doctor``: what works on this machine, and what to do about what does not."""

from __future__ import annotations

import argparse

from engine.cli.common import add_json_argument, add_repo_argument, load, repo_dir
from engine.cli.exitcodes import FAILED_CHECK, OK
from engine.flow.doctor import run_doctor

NAME = "doctor"
HELP = "check the environment, every model profile, the repository and GitHub auth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument("--profile", action="append", help="check only this profile (repeatable)")


def run(args: argparse.Namespace) -> int:
    config = load(args)
    report = run_doctor(config, repo_dir(args), args.profile)
    print(report.to_json() if args.json else report.render())
    return OK if report.ok else FAILED_CHECK
