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


def _run_tui(repo: Path, *, verbose: bool = False) -> int:
    from tui.app import AgentTuiApp

    if verbose:
        # dispatch turned llama.cpp's echo on (and imported the model host to do so); the
        # terminal is Textual's: llama.cpp's lines stay in the log file
        from engine.generate.backends.host_process import set_log_llama

        set_log_llama(False)
    app = AgentTuiApp.for_repo(repo)  # ConfigError: printed by dispatch, as for any command
    app.run()
    if app.startup_error is not None:  # the configuration failed after the first frame
        raise app.startup_error
    return int(app.return_code or 0)


def _add_tui_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="the repository directory (default: the current directory)",
    )


def _cmd_tui(args: argparse.Namespace) -> int:
    repo = Path(args.repo or Path.cwd()).resolve()
    return _run_tui(repo, verbose=getattr(args, "verbose", False))


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
    return _run_tui(demo.repo, verbose=getattr(args, "verbose", False))


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
    words = sys.argv[1:] if argv is None else list(argv)
    # `agent-tui`, `agent-tui tui ...`, `agent-tui demo ...` need no headless command: their
    # modules import most of the engine (~0.35 s before the TUI's first frame)
    interactive = not words or words[0] in {name for name, *_rest in EXTRA_COMMANDS}
    parser = build_parser(EXTRA_COMMANDS, headless=not interactive)
    args = parser.parse_args(words)
    if not getattr(args, "_run", None):
        args = parser.parse_args(["tui"])
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
