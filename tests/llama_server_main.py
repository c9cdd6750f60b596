"""``python -m llama_cpp.server`` with the engine's CPU safeguard applied.

The real server loads its model with llama.cpp's default parameters, and on a build that uses
Intel AMX the first prompt batch then crashes the server (ggml-org/llama.cpp#20824; see
``engine.backends.llama_cpp.cpu_extra_buffers``). Its settings have no ``--no-repack``, so this
launcher gives its loads the engine's decision and then runs the server module unchanged.
"""

from __future__ import annotations

import runpy
from typing import Any

import llama_cpp

from engine.backends.llama_cpp import cpu_extra_buffers, system_info

_lib = llama_cpp.llama_cpp
_default_params = _lib.llama_model_default_params
_USE_EXTRA_BUFFERS = cpu_extra_buffers(None, system_info())


def _params() -> Any:
    params = _default_params()
    params.use_extra_bufts = _USE_EXTRA_BUFFERS
    return params


if __name__ == "__main__":
    _lib.llama_model_default_params = _params
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
