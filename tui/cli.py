"""The ``agent-tui`` console script: the engine's headless commands plus the TUI.

With no command it opens the TUI in the current repository; ``agent-tui demo`` creates a demo
repository and opens the TUI on it. Textual is imported only when the TUI really opens, so the
headless commands start fast and work where textual is broken.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.cli import build_parser, dispatch
from engine.cli.exitcodes import OK


def _run_tui(repo: Path) -> int:
    from engine.core.config import load_config
    from engine.generate.backends.host_process import set_log_llama
    from tui.app import AgentTuiApp

    set_log_llama(False)  # the terminal is Textual's: llama.cpp's lines stay in the log file
    config = load_config(repo)
    app = AgentTuiApp(repo=repo, config=config)
    app.run()
    return int(app.return_code or 0)


def _add_tui_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="the repository directory (default: the current directory)",
    )


def _cmd_tui(args: argparse.Namespace) -> int:
    return _run_tui(Path(args.repo or Path.cwd()).resolve())


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to create the demo (default: a new temporary directory); "
        "an existing demo there is reused",
    )
    parser.add_argument(
        "--no-tui",
        action="store_true",
        help="only create the demo repository and print its path",
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from engine.flow.demo import create_demo

    demo = create_demo(args.dir)
    if args.no_tui:
        print(demo.repo)
        return OK
    verb = "reusing" if demo.reused else "created"
    print(f"{verb} demo repository {demo.repo} (origin: {demo.remote})", file=sys.stderr)
    return _run_tui(demo.repo)


EXTRA_COMMANDS = (
    ("tui", "open the terminal UI (the default with no command)", _add_tui_arguments, _cmd_tui),
    (
        "demo",
        "create a demo FastAPI repository with a bare origin and local issues, and open the TUI",
        _add_demo_arguments,
        _cmd_demo,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent-tui`` command."""
    parser = build_parser(EXTRA_COMMANDS)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        args = parser.parse_args(["tui"])
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
