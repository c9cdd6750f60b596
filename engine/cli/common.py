"""Arguments and helpers shared by several commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.core.config import AppConfig, load_config
from engine.core.errors import ConfigError
from engine.core.textsafe import safe
from engine.generate.backends.host_process import set_log_llama

#: the largest number a command accepts (an issue, an id): SQLite's integer
MAX_NUMBER = 2**63 - 1


def positive_int(text: str) -> int:
    """An argparse type: a whole number from 1 to :data:`MAX_NUMBER`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and {MAX_NUMBER}")
    return value


def bounded_int(
    text: str,
    *,
    what: str = "a number",
    too_small: str = "must be 1 or more",
    strip: str = "",
) -> int:
    """An argparse type: a whole number from 1 to :data:`MAX_NUMBER`, in the command's words.

    Args:
        text: the argument.
        what: what the argument is ("an issue number"), for text that is no number.
        too_small: the message for 0 or less.
        strip: leading characters to ignore (``#`` before an issue number).
    """
    try:
        value = int(text.lstrip(strip) if strip else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(too_small)
    if value > MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"{text} is too large (at most {MAX_NUMBER})")
    return value


def positive(text: str) -> int:
    """An argparse type: a count or an id, 1 or more."""
    return bounded_int(text)


def issue_number(text: str) -> int:
    """An argparse type: an issue number, ``12`` or ``#12``."""
    return bounded_int(
        text, what="an issue number", too_small="the issue number must be 1 or more", strip="#"
    )


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
    """The command's directory (``--repo``, else the current one).

    Raises:
        ConfigError: it does not exist (a typo must not read as "no issues").
    """
    path = Path(getattr(args, "repo", None) or Path.cwd()).resolve()
    if not path.is_dir():
        raise ConfigError(
            f"{path} is not a directory",
            hint="pass the repository with --repo (default: the current directory)",
        )
    return path


def load(args: argparse.Namespace) -> AppConfig:
    """The configuration as seen from the command's repository.

    An untrusted repository config whose sensitive settings were ignored is said once, on
    stderr (stdout stays clean for ``--json``). ``[generation] log_llama`` takes effect here
    (llama.cpp's log lines on the terminal).
    """
    config = load_config(repo_dir(args))
    note = config.untrusted_message()
    if note:
        print(f"warning: {safe(note)}", file=sys.stderr)
    if config.generation.log_llama:
        set_log_llama(True)
    return config
