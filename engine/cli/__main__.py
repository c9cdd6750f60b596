"""``python -m engine.cli``: the headless CLI without the TUI."""

import sys

from engine.cli import main

sys.exit(main())
