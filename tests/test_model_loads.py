"""The embedded model really loads in llama-cpp-python and produces tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ModelLoadError
from engine.modelfile import resolve_gguf


def test_embedded_profile_resolves_to_a_gguf(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, user_config=tmp_path / "none.toml")
    path = resolve_gguf(cfg.profile(), "gemma3-270m")  # type: ignore[arg-type]
    assert path.suffix == ".gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size > 200_000_000


def test_missing_or_bogus_gguf_is_a_clear_error(tmp_path: Path) -> None:
    from engine.config import LlamaCppProfile

    missing = LlamaCppProfile(backend="llama_cpp", model_path=str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_gguf(missing, "p")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        resolve_gguf(LlamaCppProfile(backend="llama_cpp", model_path=str(bogus)), "p")
    pkg = LlamaCppProfile(backend="llama_cpp", model_package="no_such_model_pkg")
    with pytest.raises(ModelLoadError, match="'no_such_model_pkg' is not installed") as info:
        resolve_gguf(pkg, "p")
    assert info.value.hint == "pip install no-such-model-pkg"


@pytest.mark.model
def test_embedded_model_generates_tokens_greedily(embedded_model_path: Path) -> None:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(embedded_model_path), n_ctx=512, verbose=False, seed=0, n_threads=2
    )
    try:
        out = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
        again = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
    finally:
        llm.close()
    text = out["choices"][0]["text"]  # type: ignore[index]
    assert out["usage"]["completion_tokens"] > 0  # type: ignore[index]
    assert text.strip()
    assert text == again["choices"][0]["text"]  # type: ignore[index]
