"""Run the model-backed tests the way another CPU would round them.

Greedy text from llama.cpp depends on the order of its floating-point sums, which a different
SIMD kernel (AVX2 vs AVX-512, another vendor's CPU) changes; so do the number of threads
splitting a matrix product and the batch size the prompt is evaluated in. A test that passes
only with this machine's text fails elsewhere. Setting ``AGENT_TUI_TEST_N_THREADS`` and/or
``AGENT_TUI_TEST_N_BATCH`` runs every model-backed test (the shared backend, the CLI's profile,
the bundled ``gemma3-270m`` profile the TUI and the demo use) with those values instead, so the
suite can be checked against other roundings on one machine:

    AGENT_TUI_TEST_N_THREADS=2 AGENT_TUI_TEST_N_BATCH=64 python -m pytest -q -m model
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

#: One thread by default: llama.cpp's threads spin at barriers, and on a busy shared machine
#: two of them run several times slower than one (measured 2.0 vs 9.1 tok/s).
N_THREADS = int(os.environ.get("AGENT_TUI_TEST_N_THREADS") or 1)
#: llama-cpp-python's default batch.
N_BATCH = int(os.environ.get("AGENT_TUI_TEST_N_BATCH") or 512)
#: Whether either was set (then the bundled profile is overridden too).
VARIED = bool(
    os.environ.get("AGENT_TUI_TEST_N_THREADS") or os.environ.get("AGENT_TUI_TEST_N_BATCH")
)

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models.toml"


def bundled_profile_override() -> str:
    """A user config that redefines the bundled embedded profile with this variant's values."""
    bundled = tomllib.loads(BUNDLED_MODELS.read_text(encoding="utf-8"))
    name = bundled["default_model"]
    fields = {**bundled["models"][name], "n_threads": N_THREADS, "n_batch": N_BATCH}
    body = "\n".join(f"{key} = {_toml(value)}" for key, value in fields.items())
    return f"[models.{name}]\n{body}\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)
