"""The backend registry and the llama.cpp backend's lifecycle: one instance per profile,
lazy loading, and one generation at a time on a shared in-process model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.config import LlamaCppProfile
from engine.core.errors import ModelLoadError
from engine.core.events import Finished, GenerationEvent, GenerationFailed, PromptProcessed
from engine.generate import backends
from engine.generate.backends import get_backend
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.model_host import HostedLlamaBackend
from tests import cpu_variant

NAME = "registry-test"


@pytest.fixture
def registry_name() -> Iterator[str]:
    """A profile name of this test's own in the process-wide registry, dropped afterwards."""
    yield NAME
    inst = backends._instances.pop(NAME, None)
    if inst is not None:
        inst.close()


def llama(model_path: Path | str, **overrides: Any) -> LlamaCppProfile:
    fields: dict[str, Any] = {
        "backend": "llama_cpp",
        "model_path": str(model_path),
        "chat_format": "gemma",
        "n_ctx": 512,
        "max_tokens": 16,
        "temperature": 0.0,
        "n_threads": cpu_variant.N_THREADS,
        "n_batch": cpu_variant.N_BATCH,
    }
    fields.update(overrides)
    return LlamaCppProfile(**fields)


def test_nothing_loads_before_the_first_use(registry_name: str, tmp_path: Path) -> None:
    # a model file that does not exist: creating the backend must not touch it
    missing = tmp_path / "later.gguf"
    backend = get_backend(registry_name, llama(missing))
    assert isinstance(backend, HostedLlamaBackend)
    assert backend.loaded is False
    assert get_backend(registry_name, llama(missing)) is backend
    # the first use is what loads it (and so what reports the missing file)
    with pytest.raises(ModelLoadError, match="does not exist"):
        backend.count_text("hello")
    assert backend.loaded is False


@pytest.mark.model
def test_same_profile_same_instance_changed_profile_closes_the_old(
    registry_name: str, embedded_model_path: Path
) -> None:
    profile = llama(embedded_model_path)
    first = get_backend(registry_name, profile)
    assert isinstance(first, HostedLlamaBackend)
    assert first.loaded is False  # lazy: created, not loaded
    assert first.count_text("hello world") > 0  # the first use loads it
    assert first.loaded is True
    # an equal profile (a new object from the same settings) is the same loaded instance
    again = get_backend(registry_name, llama(embedded_model_path))
    assert again is first and again.loaded is True
    # a changed profile replaces it: the old one is closed, the new one not loaded yet
    changed = get_backend(registry_name, llama(embedded_model_path, max_tokens=32))
    assert changed is not first
    assert isinstance(changed, HostedLlamaBackend)
    assert first.loaded is False
    assert changed.loaded is False
    assert changed.profile.max_tokens == 32
    assert backends._instances[registry_name] is changed
    assert get_backend(registry_name, llama(embedded_model_path, max_tokens=32)) is changed


def _timed_run(
    backend: Any, request: GenerationRequest, start: threading.Barrier, out: dict[str, Any]
) -> None:
    start.wait()
    events: list[GenerationEvent] = []
    for ev in backend.generate(request):
        if not events:
            out["first"] = time.perf_counter()  # the generation slot is held from here...
        events.append(ev)
    out["last"] = time.perf_counter()  # ...to the final event (inclusive)
    out["events"] = events


@pytest.mark.model
def test_two_threads_on_one_backend_take_turns(embedded_backend: Any) -> None:
    request = GenerationRequest(
        messages=[{"role": "user", "content": "Add a GET /health endpoint to app/main.py."}],
        max_tokens=12,
    )
    solo = list(embedded_backend.generate(request))
    start = threading.Barrier(2)
    results: list[dict[str, Any]] = [{}, {}]
    threads = [
        threading.Thread(target=_timed_run, args=(embedded_backend, request, start, r))
        for r in results
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    a, b = sorted(results, key=lambda r: r["first"])
    # one generation at a time: the second starts streaming only after the first finished
    assert a["last"] <= b["first"], (a["first"], a["last"], b["first"], b["last"])
    for r in (a, b):
        events = r["events"]
        assert isinstance(events[0], PromptProcessed)
        final = events[-1]
        assert isinstance(final, Finished | GenerationFailed)
        assert not isinstance(final, GenerationFailed) or final.kind == "truncated", final
        # taking turns leaves the shared model intact: greedy answers match the solo run
        assert getattr(final, "raw", None) == getattr(solo[-1], "raw", None)
        assert final.stats.completion_tokens == solo[-1].stats.completion_tokens
