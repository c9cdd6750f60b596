"""``agent-tui trust``: review the repository's ``.agent-tui.toml`` and trust it.

Why: a repository's config is someone else's input. Until the user trusts it, its settings
that send data or credentials somewhere or run commands (``[github] api_url``/``repo``, model
profiles with a server or a key, ``[publish] test_command``) are ignored (see
:func:`engine.core.config.sensitive_settings`). This command shows the file (control characters
escaped), names those settings, asks, and records the sha256 of the exact bytes shown in the
user's data directory (:mod:`engine.core.trust`); a changed file needs trusting again.

Exit status: 0 trusted (or already trusted, or revoked with ``--revoke``), 1 not trusted (the
user said no, or stdin is not a terminal and ``--yes`` was not given; with ``--json``: not
trusted yet), 7 no repository config or an invalid one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.cli.common import add_json_argument, add_repo_argument, repo_dir
from engine.cli.exitcodes import FAILED_CHECK, OK
from engine.core import trust
from engine.core.config import find_repo_config, load_file, sensitive_settings
from engine.core.errors import ConfigError
from engine.core.textsafe import safe, safe_block

NAME = "trust"
HELP = "show the repository's .agent-tui.toml and trust it (its servers, keys and commands)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--yes", action="store_true", help="trust without asking (the file is still shown)"
    )
    parser.add_argument("--revoke", action="store_true", help="forget the trust given to this file")


def run(args: argparse.Namespace) -> int:
    path = find_repo_config(repo_dir(args))
    if path is None:
        raise ConfigError(
            "this repository has no .agent-tui.toml",
            hint="nothing to trust: your own config needs no trust",
        )
    if args.revoke:
        was = trust.revoke(path)
        print(f"{safe(path)}: {'no longer trusted' if was else 'was not trusted'}")
        return OK
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{safe(path)}: cannot read: {exc.strerror}") from None
    parsed, _raw = load_file(path)  # an invalid file is refused before it can be trusted
    if args.json:
        return _json(path, data, sensitive_settings(parsed), yes=args.yes)
    if trust.is_trusted(path, data):
        print(f"{safe(path)} is already trusted with this content (sha256 {trust.digest(data)})")
        return OK
    text = data.decode("utf-8", errors="replace")
    print(f"--- {safe(path)}")
    print(safe_block(text).rstrip("\n"))
    print("---")
    needs = sensitive_settings(parsed)
    if needs:
        print(
            "Trusting it lets these settings send data or credentials or run commands: "
            + ", ".join(needs)
        )
    else:
        print("It holds no setting that needs trust; trusting it changes nothing today.")
    if not args.yes:
        if not sys.stdin.isatty():
            print("not trusted: pass --yes to trust it without a prompt", file=sys.stderr)
            return FAILED_CHECK
        try:
            answer = input(f"Trust this file (sha256 {trust.digest(data)[:16]}...)? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not trusted", file=sys.stderr)
            return FAILED_CHECK
    recorded = trust.trust(path, data)
    print(f"trusted {safe(path)} (sha256 {recorded}); a change to the file needs trusting again")
    return OK


def _json(path: Path, data: bytes, needs: list[str], *, yes: bool) -> int:
    """``--json``: the file's state (and its content); trusts it only with ``--yes``."""
    trusted = trust.is_trusted(path, data)
    if yes and not trusted:
        trust.trust(path, data)
        trusted = True
    report = {
        "path": str(path),
        "sha256": trust.digest(data),
        "trusted": trusted,
        "settings_needing_trust": needs,
        "content": data.decode("utf-8", errors="replace"),
    }
    print(json.dumps(report, indent=2))
    return OK if trusted else FAILED_CHECK
