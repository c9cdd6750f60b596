"""``agent-tui prompt ISSUE``: the exact messages that would be sent, and what they cost.

Why: silently cut prompts are the most common complaint about local-model tools. This shows
byte for byte what the model would see for an issue, the token count of every section by the
active model's own tokenizer, and every file that was left out with its reason.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli.common import add_json_argument, add_repo_argument, load, positive_int, repo_dir
from engine.cli.exitcodes import OK
from engine.context.build import build_context
from engine.context.prompts import PromptProfile, discover_profiles, load_profile
from engine.context.result import ContextResult
from engine.core.errors import ConfigError, RepoError
from engine.core.gitcmd import toplevel
from engine.generate.backends import get_backend
from engine.issues.forge.registry import issue_source_for

NAME = "prompt"
HELP = "show the exact messages for an issue, their token counts and what was left out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "issue", nargs="?", type=positive_int, metavar="ISSUE", help="the issue number"
    )
    parser.add_argument(
        "--prompt-profile",
        dest="prompt_profile",
        metavar="NAME",
        help="prompt profile name (default: default_prompt)",
    )
    # --profile names the model profile, as in generate, batch and publish
    parser.add_argument(
        "--profile",
        "--model",
        dest="model",
        metavar="PROFILE",
        help="model profile whose tokenizer and n_ctx apply (default: default_model)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the prompt profiles and where each comes from"
    )
    add_repo_argument(parser)
    add_json_argument(parser)


def _list(args: argparse.Namespace, root: Path | None) -> int:
    profiles, errors = discover_profiles(root)
    if args.json:
        data = {
            "profiles": [
                {
                    "name": p.name,
                    "description": p.description,
                    "origin": p.origin,
                    "path": str(p.path),
                    "checks": list(p.checks),
                    "always_include": list(p.always_include),
                }
                for p in profiles
            ],
            "errors": [e.message for e in errors],
        }
        print(json.dumps(data, indent=2))
    else:
        for p in profiles:
            print(f"{p.name:<20} {p.origin:<8} {p.path}")
            if p.description:
                print(f"    {p.description}")
        for e in errors:
            print(f"broken: {e.message}")
    return OK


def _render(result: ContextResult, profile: PromptProfile, model: str) -> str:
    out: list[str] = []
    for message in result.messages:
        out.append(f"===== {message['role']} =====")
        out.append(message["content"].rstrip("\n"))
    out.append("===== end of messages =====")
    out.append("")
    out.append(
        f"Tokens by {model!r} (n_ctx {result.n_ctx}, {result.reserved_tokens} reserved for the "
        f"answer, prompt budget {result.budget}); prompt profile {profile.name!r} "
        f"({profile.origin}: {profile.path})"
    )
    width = max([len(s.name) for s in result.sections()] + [24]) + 6
    for section in result.sections():
        label = (
            f"{section.kind} {section.name}"
            if section.kind in ("file", "outline")
            else section.name
        )
        if section.kind == "reserved":
            out.append(f"  {'prompt total':<{width}} {result.total_tokens:>7} / {result.budget}")
        out.append(f"  {label:<{width}} {section.tokens:>7}")
    summary = f"{result.tree_files} files in the tree"
    if result.tree_summarised:
        summary += " (summarised by directory)"
    outlined = sum(f.outline for f in result.shown)
    summary += f"; {len(result.shown) - outlined} shown in full"
    out.append(f"  {summary}" + (f", {outlined} as outlines" if outlined else ""))
    for f in result.shown:
        why = f.reason + (f" (score {f.score:g})" if f.score else "")
        out.append(f"    {f.path}: {'outline only, ' if f.outline else ''}{why}")
    if result.left_out:
        out.append("Left out:")
        for item in result.left_out:
            out.append(f"  {item.path}  [{item.reason}] {item.detail}")
    if result.more_matches:
        out.append(f"  ... and {result.more_matches} more files that matched with lower scores")
    if result.named_missing:
        out.append(
            "Named in the issue but not in the repository: " + ", ".join(result.named_missing)
        )
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    directory = repo_dir(args)
    if args.list:
        try:
            root: Path | None = toplevel(directory)
        except RepoError:
            root = None
        return _list(args, root)
    if args.issue is None:
        raise ConfigError(
            "name the issue: agent-tui prompt ISSUE", hint="or list the profiles with --list"
        )
    config = load(args)
    root = toplevel(directory)
    model_name = args.model or config.default_model
    model = config.profile(model_name)
    profile = load_profile(args.prompt_profile or config.default_prompt, root)

    source = issue_source_for(root, config)
    issue = source.get_issue(args.issue)
    comments = source.comments(args.issue) if source.HAS_COMMENTS else []
    backend = get_backend(model_name, model)
    result = build_context(
        root,
        issue,
        profile,
        count_messages=backend.count_tokens,
        count_text=backend.count_text,
        n_ctx=model.n_ctx,
        max_tokens=model.max_tokens,
        comments=comments,
        examples=profile.examples if model.prompt_examples else (),
    )
    if args.json:
        data = result.to_dict()
        data.update(
            {
                "issue": issue.number,
                "model": model_name,
                "exact_token_count": bool(backend.EXACT_TOKEN_COUNT),
                "prompt_profile": profile.name,
                "prompt_profile_path": str(profile.path),
                "shown_files": sorted(result.shown_files),
            }
        )
        print(json.dumps(data, indent=2))
    else:
        print(_render(result, profile, model_name))
        if not backend.EXACT_TOKEN_COUNT:
            print(
                f"note: {model_name!r} counts are estimates ({model.backend} has no client-side "
                "tokenizer); they are calibrated by the server's counts"
            )
    return OK
