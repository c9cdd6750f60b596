"""``agent-tui models``: the model profiles, which is default, where each was defined."""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import add_json_argument, add_repo_argument, load
from engine.cli.exitcodes import OK
from engine.core.config import LlamaCppProfile, OllamaProfile
from engine.core.errors import ConfigError
from engine.generate.discover import discover, save_profile

NAME = "models"
HELP = "list the model profiles, the default, and where each was defined"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_argument(parser)
    add_json_argument(parser)
    parser.add_argument(
        "--discover",
        action="store_true",
        help="find the model servers running on this machine (Ollama, llama-server, LM Studio, "
        "vLLM, SGLang: loopback only) and GGUF files in the usual folders",
    )
    parser.add_argument(
        "--save",
        metavar="NAME",
        action="append",
        default=[],
        help="with --discover: add the found profile NAME to your user config (repeatable)",
    )


def _discover(args: argparse.Namespace) -> int:
    found = discover()
    by_name = {d.name: d for d in found}
    for name in args.save:
        if name not in by_name:
            raise ConfigError(
                f"no model named {name!r} was found",
                hint="run `agent-tui models --discover` to see the names",
            )
        where = save_profile(name, by_name[name].profile())
        print(f"saved profile {name} to {where}", file=sys.stderr)
    if args.json:
        rows = [
            {**d.__dict__, "source": d.source, "profile": d.profile().model_dump()} for d in found
        ]
        print(json.dumps(rows, indent=2))
        return OK
    if not found:
        print(
            "no model server answered on this machine (Ollama :11434, llama-server :8080, "
            "LM Studio :1234, vLLM :8000, SGLang :30000) and no GGUF file was found in the "
            "Hugging Face cache or LM Studio's folder"
        )
        return OK
    for d in found:
        ctx = f"  context {d.n_ctx}" if d.n_ctx else ""
        print(f"  {d.name:<32} {d.source:<12} {d.model}  ({d.where}){ctx}")
    if not args.save:
        print("use one now: the Models screen (M) lists them; keep one: --save NAME")
    return OK


def _where(profile: object) -> str:
    if isinstance(profile, LlamaCppProfile):
        return profile.model_path or f"package {profile.model_package}"
    if isinstance(profile, OllamaProfile):
        return f"ollama {profile.model}"
    return f"{getattr(profile, 'base_url', '')} {getattr(profile, 'model', '')}"


def run(args: argparse.Namespace) -> int:
    if args.discover:
        return _discover(args)
    if args.save:
        raise ConfigError("--save saves a discovered model", hint="use it with --discover")
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
