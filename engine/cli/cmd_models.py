"""``agent-tui models``: the model profiles, which is default, where each was defined."""

from __future__ import annotations

import argparse
import json

from engine.cli.common import add_json_argument, add_repo_argument, load
from engine.cli.exitcodes import OK
from engine.config import LlamaCppProfile, OllamaProfile

NAME = "models"
HELP = "list the model profiles, the default, and where each was defined"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_argument(parser)
    add_json_argument(parser)


def _where(profile: object) -> str:
    if isinstance(profile, LlamaCppProfile):
        return profile.model_path or f"package {profile.model_package}"
    if isinstance(profile, OllamaProfile):
        return f"ollama {profile.model}"
    return f"{getattr(profile, 'base_url', '')} {getattr(profile, 'model', '')}"


def run(args: argparse.Namespace) -> int:
    config = load(args)
    rows = [
        {
            "name": name,
            "default": name == config.default_model,
            "backend": profile.backend,
            "model": _where(profile),
            "description": profile.description,
            "defined_in": str(config.sources[name]),
        }
        for name, profile in sorted(config.models.items())
    ]
    if args.json:
        print(json.dumps({"default": config.default_model, "profiles": rows}, indent=2))
        return OK
    for row in rows:
        star = "*" if row["default"] else " "
        print(f"{star} {row['name']:<20} {row['backend']:<9} {row['model']}")
        if row["description"]:
            print(f"    {row['description']}")
        print(f"    defined in {row['defined_in']}")
    return OK
