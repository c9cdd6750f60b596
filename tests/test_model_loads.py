"""The embedded model really loads in llama-cpp-python and produces tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.config import load_config
from engine.core.errors import ModelLoadError
from engine.generate.modelfile import resolve_gguf


def test_embedded_profile_resolves_to_a_gguf(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, user_config=tmp_path / "none.toml")
    path = resolve_gguf(cfg.profile(), "gemma3-270m")  # type: ignore[arg-type]
    assert path.suffix == ".gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size > 200_000_000


def test_missing_or_bogus_gguf_is_a_clear_error(tmp_path: Path) -> None:
    from engine.core.config import LlamaCppProfile

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
    from engine.generate.llama_model import new_llama

    llm = new_llama(
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


AMX_BUILD = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
AVX2_BUILD = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | REPACK = 1 |"


@pytest.mark.parametrize(
    ("setting", "system_info", "expected"),
    [
        (None, AMX_BUILD, False),  # llama.cpp's AMX Q4_K matmul segfaults on some CPUs
        (None, AVX2_BUILD, True),
        (True, AMX_BUILD, True),  # the profile decides when it says so
        (False, AVX2_BUILD, False),
    ],
)
def test_extra_cpu_buffers_are_off_on_amx_builds_unless_the_profile_says(
    setting: bool | None, system_info: str, expected: bool
) -> None:
    from engine.generate.llama_model import cpu_extra_buffers

    assert cpu_extra_buffers(setting, system_info) is expected


def test_the_profile_setting_reaches_llama_cpp_model_params(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``new_llama`` hands ``use_extra_bufts`` to the model parameters llama.cpp loads with."""
    import llama_cpp.llama as llama_module

    from engine.generate import llama_model as backend_module

    seen: list[bool] = []

    class FakeLlama:
        def __init__(self, **kwargs: object) -> None:
            seen.append(bool(llama_module.llama_cpp.llama_model_default_params().use_extra_bufts))

    monkeypatch.setattr("llama_cpp.Llama", FakeLlama)
    monkeypatch.setattr(backend_module, "system_info", lambda: AMX_BUILD)
    backend_module.new_llama(None, model_path="x.gguf")
    backend_module.new_llama(True, model_path="x.gguf")
    assert seen == [False, True]
    # and the library's own default is back afterwards
    assert llama_module.llama_cpp.llama_model_default_params().use_extra_bufts
