"""The ``agent-tui`` console script: the engine's headless commands plus the TUI."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.cli import build_parser, dispatch


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent-tui`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
