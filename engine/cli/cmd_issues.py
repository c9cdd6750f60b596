"""``agent-tui issues``: the repository's open issues, from GitHub (cached) or local files.

Why: the same list the TUI opens with, for scripts (``--json``) and for checking what the
cache holds offline. A GitHub source is refreshed incrementally first (``since``), unless
``--offline``; when GitHub cannot be reached the cache is served with its last refresh time.
GitHub's own error (401, rate limit...) is printed with its status and the cache still shown.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import add_json_argument, add_repo_argument, load, repo_dir
from engine.cli.exitcodes import ERROR, OK
from engine.core.errors import GitHubError
from engine.core.models import Issue
from engine.core.textsafe import safe
from engine.issues.forge.base import RefreshResult
from engine.issues.forge.github_source import GitHubIssueSource
from engine.issues.forge.registry import issue_source_for

NAME = "issues"
HELP = "list open issues (GitHub, cached for offline use; or .agent-tui/issues/*.md)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="L",
        help="only issues with this label (repeatable: all must match)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--refresh",
        action="store_true",
        help="rebuild the cache from every open issue (default: fetch only what changed)",
    )
    mode.add_argument(
        "--offline", action="store_true", help="serve the cache only; no network at all"
    )


def _row(issue: Issue) -> str:
    # every field is anyone's input on GitHub: one line each, control characters shown
    labels = f" [{safe(', '.join(issue.labels))}]" if issue.labels else ""
    who = f" @{safe(', @'.join(issue.assignees))}" if issue.assignees else ""
    mile = f" ({safe(issue.milestone)})" if issue.milestone else ""
    when = issue.updated_at.strftime("%Y-%m-%d") if issue.updated_at else "          "
    comments = f"{issue.comments:>3}c" if issue.comments else "    "
    return f"#{issue.number:<5} {when} {comments} {safe(issue.title)}{labels}{who}{mile}"


def run(args: argparse.Namespace) -> int:
    config = load(args)
    source = issue_source_for(repo_dir(args), config)
    status = OK
    result: RefreshResult | None = None
    failure: GitHubError | None = None
    if source.REMOTE and not args.offline:
        try:
            if isinstance(source, GitHubIssueSource):
                result = source.refresh(full=args.refresh)
            else:
                result = source.refresh()
        except GitHubError as exc:
            failure = exc
            status = ERROR
            print(exc.render(), file=sys.stderr)
    issues = source.list_issues()
    wanted = set(args.label)
    if wanted:
        issues = [i for i in issues if wanted <= set(i.labels)]
    describe = getattr(source, "describe", None)
    where = (
        describe() if callable(describe) else f"local issues in {getattr(source, 'directory', '')}"
    )
    last = None
    if isinstance(source, GitHubIssueSource):
        last = source.last_refresh()
    stale = failure is not None or (result is not None and result.offline) or args.offline
    if args.json:
        out = {
            "source": source.name,
            "where": where,
            "refreshed_at": last.isoformat() if last else None,
            "offline": bool(result and result.offline),
            "stale": bool(stale and source.REMOTE),
            "message": result.message if result else "",
            "error": (
                {"title": failure.title, "message": failure.message, "status": failure.status}
                if failure
                else None
            ),
            "issues": [i.model_dump(mode="json") for i in issues],
        }
        print(json.dumps(out, indent=2))
        return status
    header = where
    if source.REMOTE:
        stamp = last.astimezone().strftime("%Y-%m-%d %H:%M") if last else "never"
        header += f" — last refresh {stamp}"
    print(header, file=sys.stderr)
    if result is not None and result.message:
        print(result.message, file=sys.stderr)
    for issue in issues:
        print(_row(issue))
    if not issues:
        print(
            "no open issues" + (f" labelled {', '.join(sorted(wanted))}" if wanted else ""),
            file=sys.stderr,
        )
    return status
