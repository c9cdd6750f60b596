"""Arguments and helpers shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.config import AppConfig, load_config


def add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="the repository directory (default: the current directory)",
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def repo_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "repo", None) or Path.cwd()).resolve()


def load(args: argparse.Namespace) -> AppConfig:
    """The configuration as seen from the command's repository."""
    return load_config(repo_dir(args))
