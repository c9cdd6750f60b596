"""A registry of model backends by the profile's ``backend`` name.

Backends register lazily (their modules import heavy clients such as llama_cpp or ollama),
and loaded in-process models are kept per profile for the life of the process.
"""

from __future__ import annotations

import importlib
import sys
import threading

# httpx (used by the server backends and the ollama client) imports its optional command-line
# tool, httpx._main, from its package __init__ whenever click, pygments and rich happen to be
# installed -- and rich is, because the TUI needs it. That would load ~50 rich modules into
# every headless process and break the rule that the engine runs without UI libraries. httpx
# guards that import with ``except ImportError``; marking the CLI module as absent before httpx
# is first imported keeps rich out and costs nothing but httpx's own CLI, which we never use.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
from typing import Any

from engine.core.config import ModelProfile
from engine.core.errors import ConfigError
from engine.generate.backends.base import Backend, GenerationRequest

#: backend name -> "module:Class". ``llama_cpp`` profiles run in a model host process
#: (``engine.generate.backends.model_host``): a crash in llama.cpp must not take the app down.
REGISTRY: dict[str, str] = {
    "llama_cpp": "engine.generate.backends.model_host:HostedLlamaBackend",
    "ollama": "engine.generate.backends.ollama:OllamaBackend",
    "openai": "engine.generate.backends.openai_compat:OpenAICompatBackend",
}

_instances: dict[str, Backend[Any]] = {}
_lock = threading.Lock()


def backend_class(kind: str) -> type[Backend[Any]]:
    """The class registered for ``kind``; an unknown name lists the known ones."""
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise ConfigError(
            f"unknown backend {kind!r}; known backends: {', '.join(sorted(REGISTRY))}"
        ) from None
    module, cls = target.split(":")
    result: type[Backend[Any]] = getattr(importlib.import_module(module), cls)
    return result


def get_backend(name: str, profile: ModelProfile) -> Backend[Any]:
    """The backend instance for profile ``name``, created once per process."""
    with _lock:
        inst = _instances.get(name)
        if inst is None or inst.profile != profile:
            if inst is not None:
                inst.close()
            inst = backend_class(profile.backend)(name, profile)
            _instances[name] = inst
        return inst


def close_all() -> None:
    """Release every backend (models, connections)."""
    with _lock:
        for inst in _instances.values():
            inst.close()
        _instances.clear()


__all__ = ["Backend", "GenerationRequest", "backend_class", "get_backend", "close_all"]
