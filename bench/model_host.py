"""Tokens per second through the model host (a child process) vs the same backend in-process.

Usage: ``python bench/model_host.py [--rounds 5] [--tokens 128] [--profile NAME] [--threads 1]``

Both sides run the same ``LlamaCppBackend`` code on the same model file, prompt, sampling
(greedy) and grammar: the in-process one in this process, the hosted one in its model host
(``engine.generate.backends.model_host``), whose events cross a socket. Tokens per second are
measured where a user sees them, **by the consumer of the event stream**: completion tokens after
the first one, over the time from the first ``TokensGenerated`` event to the final event. So the
host's costs (pickling, the socket, the reader thread, batching) are inside the figure.

The two sides take turns, one generation each (``--rounds`` pairs), after one warm-up each
(model load, llguidance's tokenizer, the prefix cache): a shared machine whose speed swings
within a minute slows both alike. The ratio is the median of the per-pair ratios.

The line before last compares the decoders' own tok/s (``GenerationStats.tokens_per_s``,
measured inside each decoding process): the gap between the two lines is what the pipe costs;
a gap in both is the decoding process itself running slower or faster.

The last line is ``host/in-process tok/s: R`` (goal: >= 0.97).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the same issue and prompt as the constrained-decoding bench, so the figures compare
from constrained_decoding import messages  # noqa: E402

from engine.core.config import LlamaCppProfile, load_config  # noqa: E402
from engine.core.events import Finished, GenerationFailed, TokensGenerated  # noqa: E402
from engine.generate.backends.base import GenerationRequest  # noqa: E402
from engine.generate.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from engine.generate.backends.model_host import HostedLlamaBackend  # noqa: E402


def timed(backend: Any, request: GenerationRequest) -> tuple[int, float, str, float]:
    """(tokens after the first, seconds from the first text to the end, final kind, the
    decoder's own tok/s from the final event's stats)."""
    first_at: float | None = None
    first_tokens = 0
    for event in backend.generate(request):
        now = time.perf_counter()
        if isinstance(event, TokensGenerated) and first_at is None:
            first_at, first_tokens = now, event.completion_tokens
        if isinstance(event, Finished | GenerationFailed):
            assert first_at is not None, event
            kind = "finished" if isinstance(event, Finished) else event.kind
            tokens = event.stats.completion_tokens - first_tokens
            return tokens, now - first_at, kind, event.stats.tokens_per_s
    raise AssertionError("the stream ended without a final event")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="llama.cpp profile (default: default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens per generation")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (each side)")
    args = parser.parse_args()
    config = load_config(Path.cwd())
    name = args.profile or config.default_model
    base = config.profile(name)
    if not isinstance(base, LlamaCppProfile):
        print(f"profile {name!r} is not a llama.cpp profile", file=sys.stderr)
        return 2
    profile = base.model_copy(update={"n_threads": args.threads, "temperature": 0.0})
    request = GenerationRequest(messages=messages(), max_tokens=args.tokens)
    inproc = LlamaCppBackend(name, profile)
    hosted = HostedLlamaBackend(name, profile)
    try:
        t0 = time.perf_counter()
        inproc.load().tokenizer()
        timed(inproc, request)
        print(f"in-process: loaded and warmed in {time.perf_counter() - t0:.1f}s")
        t0 = time.perf_counter()
        hosted.load()
        timed(hosted, request)
        print(f"host:       started, loaded and warmed in {time.perf_counter() - t0:.1f}s")
        ratios: list[float] = []
        own_ratios: list[float] = []
        rates: dict[str, list[float]] = {"in-process": [], "host": []}
        for i in range(args.rounds):
            pair: dict[str, float] = {}
            own: dict[str, float] = {}
            order = [("in-process", inproc), ("host", hosted)]
            if i % 2:
                order.reverse()
            for label, backend in order:
                tokens, seconds, kind, own[label] = timed(backend, request)
                pair[label] = tokens / seconds
                rates[label].append(pair[label])
                rate = pair[label]
                print(
                    f"round {i + 1} {label:<10} {rate:7.1f} tok/s ({tokens} tokens, {kind}; "
                    f"the decoder's own figure {own[label]:.1f})"
                )
            ratios.append(pair["host"] / pair["in-process"])
            own_ratios.append(own["host"] / own["in-process"])
        for label, values in rates.items():
            print(f"{label:<10} median {statistics.median(values):7.1f} tok/s")
        print(
            "the decoders' own figures, host/in-process (no pipe inside): "
            f"{statistics.median(own_ratios):.3f}"
        )
        print(f"host/in-process tok/s: {statistics.median(ratios):.3f}")
    finally:
        hosted.close()
        inproc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
