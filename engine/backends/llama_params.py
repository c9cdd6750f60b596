"""Model settings llama-cpp-python's ``Llama`` does not take as arguments, applied at load.

Why: on CPUs with AMX (Intel Sapphire Rapids and later) llama.cpp's "extra buffer types" --
the AMX and repacked-weight CPU kernels that ``use_extra_bufts`` turns on by default -- crash
the process with SIGSEGV on the first prompt ``llama_decode`` with llama-cpp-python 0.3.36 and
the embedded Gemma 3 GGUF (measured on this project's build machine: every evaluation crashed,
even ``Llama("...")("hello")``; with ``use_extra_bufts`` off every one ran). ``Llama`` builds
its ``llama_model_params`` from ``llama_model_default_params()`` without a way to set the
field, so the default is changed where ``Llama`` reads it.

``AGENT_TUI_LLAMA_EXTRA_BUFTS=1`` keeps llama.cpp's default (to measure, or where it works).
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_applied = False


def extra_bufts_enabled() -> bool:
    """Whether llama.cpp's extra CPU buffer types (AMX, repacked weights) stay on."""
    return os.environ.get("AGENT_TUI_LLAMA_EXTRA_BUFTS", "") == "1"


def apply_model_defaults() -> None:
    """Make every later ``Llama(...)`` of this process load with ``use_extra_bufts`` off.

    Idempotent; a no-op when ``AGENT_TUI_LLAMA_EXTRA_BUFTS=1`` or when this llama-cpp-python
    has no such field.
    """
    global _applied
    if extra_bufts_enabled():
        return
    with _lock:
        if _applied:
            return
        import llama_cpp.llama_cpp as lc

        fields = {name for name, *_ in lc.llama_model_params._fields_}
        if "use_extra_bufts" not in fields:
            _applied = True
            return
        original = lc.llama_model_default_params

        def defaults() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        lc.llama_model_default_params = defaults
        _applied = True


__all__ = ["apply_model_defaults", "extra_bufts_enabled"]
