"""agent-tui's engine: everything that is not the screen.

The engine runs without the UI (no textual, no rich: a test and an import-linter contract
enforce it), so every action the TUI offers is also reachable from the headless CLI and
from tests.
"""

__version__ = "0.1.0"
