"""The same constrained generation on the CPU and fully offloaded to the GPU, side by side.

Usage: ``python bench/gpu_offload.py [--model-path GGUF] [--profile NAME] [--rounds 2]``

It needs a llama-cpp-python built with GPU support (README, "GPU build"). Both runs use one
profile, one prompt (the Backend Dev Agent system prompt and an issue) and greedy decoding;
only ``n_gpu_layers`` (0 vs -1) and ``flash_attn`` differ. It checks that both answers
validate as a ChangeProposal and says whether they are identical (GPU and CPU kernels round
differently, so a greedy answer may diverge after a while; both must stay valid).

The last line is ``gpu/cpu tok/s: R`` (median GPU decode tok/s / median CPU decode tok/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.config import LlamaCppProfile, load_config  # noqa: E402
from engine.core.events import Finished, GenerationFailed  # noqa: E402
from engine.generate.backends.base import GenerationRequest  # noqa: E402
from engine.generate.backends.llama_cpp import LlamaCppBackend  # noqa: E402

ISSUE = (
    "Issue #12: Add a health endpoint\n\n"
    'Add GET /api/v1/health returning {"status": "ok", "version": settings.version}, '
    "with a test in tests/test_health.py."
)


def run(backend: LlamaCppBackend, req: GenerationRequest) -> Finished | GenerationFailed:
    final: Finished | GenerationFailed | None = None
    for event in backend.generate(req):
        if isinstance(event, Finished | GenerationFailed):
            final = event
    assert final is not None, "the stream ended without a final event"
    return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model-path", default=None, help="a GGUF to use instead")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=512)
    args = parser.parse_args()

    import llama_cpp

    supported = bool(llama_cpp.llama_supports_gpu_offload())
    print(f"llama-cpp-python {llama_cpp.__version__}; GPU offload supported: {supported}")
    if not supported:
        print("this build cannot offload: rebuild with CMAKE_ARGS=-DGGML_CUDA=on", file=sys.stderr)
        return 1
    config = load_config(ROOT)
    name = args.profile or config.default_model
    base = config.profile(name)
    if not isinstance(base, LlamaCppProfile):
        print(f"profile {name!r} is not a llama.cpp profile", file=sys.stderr)
        return 2
    if args.model_path:
        base = base.model_copy(update={"model_path": args.model_path, "model_package": None})
    system = (ROOT / "prompts" / "backend-dev.md").read_text(encoding="utf-8")
    req = GenerationRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": ISSUE}],
        max_tokens=args.max_tokens,
    )
    results: dict[str, list[Finished | GenerationFailed]] = {}
    setups = {
        "cpu": {"n_gpu_layers": 0, "flash_attn": False, "n_threads": os.cpu_count()},
        "gpu": {"n_gpu_layers": -1, "flash_attn": True},
    }
    for label, update in setups.items():
        backend = LlamaCppBackend(f"{name}-{label}", base.model_copy(update=update))
        backend.load()
        run(backend, req)  # warm-up: first-call costs (tokenizer, CUDA graphs) paid here
        results[label] = [run(backend, req) for _ in range(args.rounds)]
        backend.close()

    def tps(label: str) -> float:
        return statistics.median(r.stats.tokens_per_s for r in results[label])

    for label, finals in results.items():
        last = finals[-1]
        kind = "valid proposal" if isinstance(last, Finished) else f"FAILED ({last.kind})"
        print(
            f"{label}: {tps(label):8.1f} tok/s decode, TTFT "
            f"{statistics.median(r.stats.ttft_s for r in finals) * 1000:7.1f} ms, "
            f"{last.stats.completion_tokens} tokens, {kind}"
        )
    same = results["cpu"][-1].raw == results["gpu"][-1].raw
    print(f"identical answers on CPU and GPU: {same}")
    ok = all(isinstance(r, Finished) for finals in results.values() for r in finals)
    print(f"gpu/cpu tok/s: {tps('gpu') / tps('cpu'):.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
