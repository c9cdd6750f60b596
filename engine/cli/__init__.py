"""The headless command line: every TUI action is also a script-friendly command.

Commands live one per module, ``engine/cli/cmd_<name>.py``, each defining ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. They are discovered here, so
adding a command touches no shared file. ``tui.cli`` adds the interactive commands
(the TUI itself and ``demo``) on top of this parser.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from engine import __version__
from engine.cli.exitcodes import ERROR, INTERRUPTED, OK
from engine.core.errors import AgentTuiError
from engine.core.textsafe import safe_std_streams


def command_modules() -> list[ModuleType]:
    """Every ``cmd_*`` module of this package, sorted by name."""
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return sorted(mods, key=lambda m: str(m.NAME))


def build_parser(
    extra: Sequence[
        tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]
    ] = (),
    *,
    headless: bool = True,
) -> argparse.ArgumentParser:
    """The ``agent-tui`` parser with every headless command, plus ``extra`` commands.

    Args:
        extra: (name, help, add_arguments, run) of commands defined outside the engine.
        headless: include the headless commands (False: only ``extra``; their modules
            import most of the engine, ~0.35 s on the development machine).
    """
    parser = argparse.ArgumentParser(
        prog="agent-tui",
        description="Turn a repository's issues into reviewed pull requests with a local model.",
    )
    parser.add_argument("--version", action="version", version=f"agent-tui {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show llama.cpp's own log lines (always kept in the state dir's logs/)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = command_modules() if headless else []
    entries = [(m.NAME, m.HELP, m.add_arguments, m.run) for m in modules]
    headless_names = {m.NAME for m in modules}
    for name, help_text, add_arguments, run in sorted([*entries, *extra], key=lambda e: e[0]):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        # headless commands print through the sanitiser; the TUI owns its terminal
        p.set_defaults(_run=run, _safe_output=name in headless_names)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; expected failures print a titled message, not a traceback.

    A headless command's output goes through :class:`engine.core.textsafe.SafeStream`: the
    control characters of untrusted text (issue titles, server messages, paths) are shown
    escaped, never obeyed by the terminal. ``--verbose`` puts llama.cpp's log lines on the
    terminal too.
    """
    if getattr(args, "verbose", False):
        # imported here: the TUI's first paint imports this package, and the model host
        # (~10 ms, measured after the CLI's commands) is not on its list
        from engine.generate.backends.host_process import set_log_llama

        set_log_llama(True)
    if getattr(args, "_safe_output", False):
        with safe_std_streams():
            return _dispatch(args)
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args))
    except AgentTuiError as exc:
        print(exc.render(), file=sys.stderr)
        if getattr(args, "json", False):  # a script reading stdout still gets one JSON object
            error = {"title": exc.title, "message": exc.message, "hint": exc.hint}
            print(json.dumps({"ok": False, "error": error}, indent=2))
        return ERROR
    except (RecursionError, OverflowError, UnicodeError) as exc:
        # bad input no parser foresaw (a nested document, a huge number, a lone surrogate):
        # a message and a status, never a traceback; the --json reader still gets JSON
        error = {"title": "Invalid input", "message": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"{error['title']}: {error['message']}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": {**error, "hint": ""}}, indent=2))
        return ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error of ours; silence the flush at exit
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK


def main(argv: Sequence[str] | None = None) -> int:
    """Headless entry point (``python -m engine.cli``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    return dispatch(args)
