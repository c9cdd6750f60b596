"""``python -m llama_cpp.server`` with the engine's CPU safeguard applied.

The real server loads its model with llama.cpp's default parameters, and on a build that uses
Intel AMX the first prompt batch then crashes the server (ggml-org/llama.cpp#20824; see
``engine.generate.llama_model.cpu_extra_buffers``). Its settings have no ``--no-repack``,
so this launcher runs the server module unchanged inside the engine's ``cpu_safeguard``.
"""

from __future__ import annotations

import runpy

from engine.generate.llama_model import cpu_safeguard

if __name__ == "__main__":
    with cpu_safeguard():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
