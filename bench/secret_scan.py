"""The secret scan with and without its pre-filter, side by side on the same files.

Two sets of files: the context bench's synthetic modules (what a context build scans) and
agent-tui's own sources (real code that talks about tokens, keys and secrets a lot). Each
set is scanned by the full detect-secrets line scan (every line through every plugin:
``scan_text_full``) and by ``scan_text`` (one pre-filter pass, then detect-secrets on the
candidate lines only), alternating rounds, best round of each kept; the findings must be
identical.

Usage::

    python bench/secret_scan.py [--modules 300] [--rounds 3]

The last line is ``secret scan speedup: R`` (full time / pre-filtered time, all files).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from context_build import make_module

from engine.context.secrets_scan import SecretFinding, scan_text, scan_text_full

ROOT = Path(__file__).resolve().parent.parent

Scan = Callable[[str, str], list[SecretFinding]]


def timed(scan: Scan, files: list[tuple[str, str]]) -> tuple[float, list[list[SecretFinding]]]:
    t0 = time.perf_counter()
    found = [scan(path, text) for path, text in files]
    return time.perf_counter() - t0, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(42)
    sets = {
        "context bench modules": [make_module(rng, i) for i in range(args.modules)],
        "agent-tui sources": [
            (str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
            for folder in ("engine", "tui", "tests")
            for p in sorted((ROOT / folder).rglob("*.py"))
        ],
    }
    scan_text("warm.py", 'password = "x1y2z3w4v5u6"\n')  # imports, plugins, pre-filter
    scan_text_full("warm.py", 'password = "x1y2z3w4v5u6"\n')
    print(f"{'files':<24} {'lines':>7} {'full s':>8} {'filtered s':>10} {'speedup':>8} findings")
    total_full = total_fast = 0.0
    for name, files in sets.items():
        lines = sum(len(text.splitlines()) for _p, text in files)
        full_s = fast_s = float("inf")
        for _round in range(args.rounds):
            seconds, full = timed(scan_text_full, files)
            full_s = min(full_s, seconds)
            seconds, fast = timed(scan_text, files)
            fast_s = min(fast_s, seconds)
            assert fast == full, f"{name}: the pre-filter changed the findings"
        total_full += full_s
        total_fast += fast_s
        count = sum(len(f) for f in fast)
        print(
            f"{name:<24} {lines:>7} {full_s:>8.3f} {fast_s:>10.3f} {full_s / fast_s:>7.1f}x {count}"
        )
        per_line = f"full {full_s / lines * 1e6:.1f} us, filtered {fast_s / lines * 1e6:.1f} us"
        print(f"  per line: {per_line}")
    print(f"secret scan speedup: {total_full / total_fast:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
