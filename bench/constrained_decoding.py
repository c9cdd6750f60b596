"""Constrained vs unconstrained decoding speed, side by side in one run, same model and prompt.

Usage: ``python bench/constrained_decoding.py [--rounds 3] [--max-tokens 256] [--profile NAME]``

What is measured (output tokens per second of decoding, prompt processing excluded; every
mode decodes the same prompt with the same sampling settings, and the modes run interleaved,
round after round, so that a noisy machine slows all of them alike):

* ours, constrained: the engine's loop with the proposal grammar, check-first sampling plus
  fast-forward of forced tokens (what ``agent-tui`` uses);
* ours, constrained with the full mask before every token (the reference path of the tests);
* ours, unconstrained: the *same loop* without a grammar, decoding exactly ``--max-tokens``
  tokens (end-of-generation ignored): the honest baseline of the final ratio;
* llama-cpp-python's own ``create_completion``, unconstrained;
* llama-cpp-python's stock ``response_format`` path (``json_object`` + schema, its GBNF
  grammar sampler), for comparison.

The last line is ``constrained/unconstrained tok/s: R`` (ours constrained / ours unconstrained).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.backends.llama_cpp import (  # noqa: E402
    DecodeDone,
    DecodeOptions,
    LlamaCppBackend,
    SamplingParams,
)
from engine.config import LlamaCppProfile, load_config  # noqa: E402
from engine.models import proposal_json_schema  # noqa: E402

ISSUE = (
    "Issue #12: Add a health endpoint\n\n"
    'Add `GET /api/v1/health` to the FastAPI app. It returns `{"status": "ok"}` and the '
    "application version from settings. Add a test with httpx. Closes #12 in the PR body."
)


def messages() -> list[dict[str, str]]:
    system = (ROOT / "prompts" / "backend-dev.md").read_text(encoding="utf-8")
    return [{"role": "system", "content": system}, {"role": "user", "content": ISSUE}]


def run_ours(
    backend: LlamaCppBackend,
    prompt: list[int],
    schema: dict | None,
    sampling: SamplingParams,
    max_tokens: int,
    options: DecodeOptions | None = None,
) -> DecodeDone:
    done = None
    for item in backend.decode(
        prompt,
        schema=schema,
        sampling=sampling,
        max_tokens=max_tokens,
        options=options or DecodeOptions(),
        stop_at_eog=False,
    ):
        if isinstance(item, DecodeDone):
            done = item
    assert done is not None and done.reason in ("stop", "length"), done
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="llama.cpp profile (default: default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--no-stock", action="store_true", help="skip llama-cpp-python paths")
    args = parser.parse_args()

    config = load_config(ROOT)
    name = args.profile or config.default_model
    profile = config.profile(name)
    if not isinstance(profile, LlamaCppProfile):
        print(f"profile {name!r} is not a llama.cpp profile", file=sys.stderr)
        return 2
    profile = profile.model_copy(update={"n_ctx": args.n_ctx})
    backend = LlamaCppBackend(name, profile)
    t0 = time.perf_counter()
    model = backend.load()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.tokenizer()
    tok_s = time.perf_counter() - t0
    msgs = messages()
    prompt = backend.prompt_tokens(msgs)
    schema = proposal_json_schema()
    sampling = SamplingParams.from_profile(profile)
    n = args.max_tokens
    llm = model.llm

    stock_grammar = None
    if not args.no_stock:
        from llama_cpp import LlamaGrammar

        stock_grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)

    def stock_completion(grammar: object | None) -> tuple[int, float]:
        """llama-cpp-python's own loop: (completion tokens, seconds from first token)."""
        first = last = 0.0
        count = 0
        for chunk in llm.create_completion(
            prompt,
            max_tokens=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=0.0,
            repeat_penalty=sampling.repeat_penalty,
            seed=sampling.seed,
            grammar=grammar,
            stream=True,
        ):
            now = time.perf_counter()
            if not count:
                first = now
            last = now
            count += 1
            del chunk
        return count, (last - first)

    modes: dict[str, list[tuple[int, float]]] = {
        "constrained": [],
        "full_mask": [],
        "unconstrained": [],
        "stock_unconstrained": [],
        "stock_grammar": [],
    }
    details: dict[str, DecodeDone] = {}
    # warm-up: prompt in the KV cache, first-call costs paid
    run_ours(backend, prompt, schema, sampling, 16)
    for _ in range(args.rounds):
        d = run_ours(backend, prompt, schema, sampling, n)
        details["constrained"] = d
        modes["constrained"].append((d.completion_tokens, d.decode_seconds))
        d = run_ours(backend, prompt, None, sampling, n)
        modes["unconstrained"].append((d.completion_tokens, d.decode_seconds))
        d = run_ours(backend, prompt, schema, sampling, n, DecodeOptions(check_first=False))
        details["full_mask"] = d
        modes["full_mask"].append((d.completion_tokens, d.decode_seconds))
        if not args.no_stock:
            # the first streamed chunk follows the first sampled token: count from there
            c, s = stock_completion(None)
            modes["stock_unconstrained"].append((c - 1, s))
            c, s = stock_completion(stock_grammar)
            modes["stock_grammar"].append((c - 1, s))

    def rate(samples: list[tuple[int, float]]) -> float:
        return sum(c for c, _ in samples) / sum(s for _, s in samples) if samples else 0.0

    def spread(samples: list[tuple[int, float]]) -> str:
        rates = [c / s for c, s in samples if s > 0]
        if len(rates) < 2:
            return ""
        med = statistics.median(rates)
        return f" (per round {min(rates):.1f}-{max(rates):.1f}, median {med:.1f})"

    c = details["constrained"]
    print(
        f"model {model.path.name}: vocab {model.n_vocab}, n_ctx {model.n_ctx}, "
        f"threads {llm.n_threads}; load {load_s:.2f}s, llguidance tokenizer {tok_s:.2f}s"
    )
    print(
        f"prompt {len(prompt)} tokens, max_tokens {n}, sampling {sampling}, "
        f"{args.rounds} interleaved rounds"
    )
    print(
        f"ours, constrained (check-first + fast-forward):   {rate(modes['constrained']):6.1f} "
        f"tok/s{spread(modes['constrained'])}"
    )
    print(
        f"    last run: {c.completion_tokens} tokens = {c.sampled} sampled + {c.forced} "
        f"fast-forwarded; {c.masks} full masks computed ({c.rejections} rejections), "
        f"finish {c.reason}"
    )
    fm = details["full_mask"]
    print(
        f"ours, constrained (full mask every token):        {rate(modes['full_mask']):6.1f} "
        f"tok/s{spread(modes['full_mask'])}  [{fm.completion_tokens} tokens]"
    )
    print(
        f"ours, unconstrained (same loop, no grammar):      {rate(modes['unconstrained']):6.1f} "
        f"tok/s{spread(modes['unconstrained'])}"
    )
    if not args.no_stock:
        print(
            "llama-cpp-python create_completion, unconstrained: "
            f"{rate(modes['stock_unconstrained']):6.1f} tok/s"
            f"{spread(modes['stock_unconstrained'])}"
        )
        print(
            "llama-cpp-python grammar (response_format path):   "
            f"{rate(modes['stock_grammar']):6.1f} tok/s{spread(modes['stock_grammar'])}"
        )
    ratio = rate(modes["constrained"]) / rate(modes["unconstrained"])
    print(f"constrained/unconstrained tok/s: {ratio:.2f}")
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
