"""Constrained vs unconstrained decoding speed, side by side in one run, same model and prompt.

Usage: ``python bench/constrained_decoding.py [--tokens 256] [--profile NAME] [--no-stock]``

Every mode decodes the same prompt (the Backend Dev Agent prompt + an issue) with the same
sampling settings, each in its own llama.cpp context of the same model. The modes advance in
**lockstep, one decoding step each in turn**, and each step is timed on its own, so a busy
machine slows every mode alike (a shared 2-core machine swings 10x within a minute: whole-run
timings taken one after the other are not comparable there). Only decoding is timed: prompt
processing is excluded. A mode that ends its answer (the JSON closed, or end of generation)
starts the same request again, so every mode decodes at least ``--tokens`` tokens.

* ours, constrained: the engine's loop with the proposal grammar, check-first sampling plus
  fast-forward of forced tokens (what ``agent-tui`` uses);
* ours, constrained with the full mask before every token (the reference path of the tests);
* ours, unconstrained: the *same loop* without a grammar (end of generation ignored): the
  baseline of the final ratio;
* llama-cpp-python's own ``create_completion``, unconstrained;
* llama-cpp-python's stock grammar path, what ``response_format`` does (its GBNF grammar from
  the same schema, applied before sampling), for comparison.

The last line is ``constrained/unconstrained tok/s: R`` (ours constrained / ours unconstrained).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.config import LlamaCppProfile, load_config  # noqa: E402
from engine.core.models import proposal_json_schema  # noqa: E402
from engine.generate.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from engine.generate.decode import (  # noqa: E402
    DecodeDone,
    DecodeOptions,
    PromptEvaluated,
    Rewound,
    TokensDecoded,
)
from engine.generate.sampling import SamplingParams  # noqa: E402

ISSUE = (
    "Issue #12: Add a health endpoint\n\n"
    'Add `GET /api/v1/health` to the FastAPI app. It returns `{"status": "ok"}` and the '
    "application version from settings. Add a test with httpx. Closes #12 in the PR body."
)


def messages() -> list[dict[str, str]]:
    system = (ROOT / "prompts" / "backend-dev.md").read_text(encoding="utf-8")
    return [{"role": "system", "content": system}, {"role": "user", "content": ISSUE}]


@dataclass
class Mode:
    """One decoding mode: a restartable stream of steps, each timed."""

    label: str
    start: Callable[[], Iterator[Any]]
    count: Callable[[Any], tuple[int, bool]]
    """item -> (output tokens it carries, whether it is prompt processing, untimed)."""
    tokens: int = 0
    seconds: float = 0.0
    answers: int = 0
    notes: dict[str, int] = field(default_factory=dict)
    _it: Iterator[Any] | None = None

    def step(self) -> None:
        if self._it is None:
            self._it = self.start()
        t0 = time.perf_counter()
        try:
            item = next(self._it)
        except StopIteration:
            self._it = None
            self.answers += 1
            return
        dt = time.perf_counter() - t0
        n, untimed = self.count(item)
        if not untimed:
            self.tokens += n
            self.seconds += dt
        if isinstance(item, TokensDecoded):
            for key, value in (
                ("sampled", len(item.tokens) - item.forced),
                ("forced", item.forced),
                ("rejections", int(item.rejected)),
            ):
                self.notes[key] = self.notes.get(key, 0) + value
        if isinstance(item, Rewound):  # decoded, then taken back: not in the answer
            self.tokens -= item.removed
            self.notes["rewinds"] = self.notes.get("rewinds", 0) + 1
        if isinstance(item, DecodeDone):
            self.notes[item.reason] = self.notes.get(item.reason, 0) + 1

    def close(self) -> None:
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def ours_count(item: Any) -> tuple[int, bool]:
    if isinstance(item, PromptEvaluated):
        return 0, True
    if isinstance(item, TokensDecoded):
        return len(item.tokens), False
    return 0, False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="llama.cpp profile (default: default)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens each mode decodes")
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: the profile's)"
    )
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--no-stock", action="store_true", help="skip llama-cpp-python paths")
    args = parser.parse_args()

    config = load_config(ROOT)
    name = args.profile or config.default_model
    profile = config.profile(name)
    if not isinstance(profile, LlamaCppProfile):
        print(f"profile {name!r} is not a llama.cpp profile", file=sys.stderr)
        return 2
    profile = profile.model_copy(
        update={"n_ctx": args.n_ctx, "n_threads": args.threads or profile.n_threads}
    )
    # one context per mode (same weights, mmapped once) so that the modes can interleave
    backends = [LlamaCppBackend(name, profile) for _ in range(5 if not args.no_stock else 3)]
    t0 = time.perf_counter()
    models = [b.load() for b in backends]
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    models[0].tokenizer()
    tok_s = time.perf_counter() - t0
    prompt = backends[0].prompt_tokens(messages())
    schema = proposal_json_schema()
    sampling = SamplingParams.from_profile(profile)
    budget = args.tokens * 2  # per answer; answers restart until --tokens are reached

    def ours(backend: LlamaCppBackend, constrained: bool, options: DecodeOptions) -> Mode:
        return Mode(
            label="",
            start=lambda: backend.decode(
                prompt,
                schema=schema if constrained else None,
                sampling=sampling,
                max_tokens=budget,
                options=options,
                stop_at_eog=False,
            ),
            count=ours_count,
        )

    modes = {
        "constrained": ours(backends[0], True, DecodeOptions()),
        "full_mask": ours(backends[1], True, DecodeOptions(check_first=False)),
        "unconstrained": ours(backends[2], False, DecodeOptions()),
    }
    if not args.no_stock:
        from llama_cpp import LlamaGrammar

        stock_grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)

        def stock(llm: Any, grammar: Any) -> Mode:
            def start() -> Iterator[Any]:
                first = True
                for chunk in llm.create_completion(
                    prompt,
                    max_tokens=budget,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=sampling.top_k,
                    min_p=0.0,
                    repeat_penalty=sampling.repeat_penalty,
                    seed=sampling.seed,
                    grammar=grammar,
                    stream=True,
                ):
                    # the first chunk carries prompt processing: untimed, like ours
                    yield ("prompt" if first else "token", chunk)
                    first = False

            return Mode(label="", start=start, count=lambda it: (1, it[0] == "prompt"))

        modes["stock_unconstrained"] = stock(models[3].llm, None)
        modes["stock_grammar"] = stock(models[4].llm, stock_grammar)

    # warm-up: each context holds the prompt, first-call costs are paid
    for mode in modes.values():
        for _ in range(3):
            mode.step()
        mode.tokens, mode.seconds, mode.notes = 0, 0.0, {}
    active = list(modes.values())
    wall = time.perf_counter()
    while active:
        for mode in list(active):
            mode.step()
            if mode.tokens >= args.tokens:
                active.remove(mode)
                mode.close()
    wall = time.perf_counter() - wall

    llm = models[0].llm
    print(
        f"model {models[0].path.name}: vocab {models[0].n_vocab}, n_ctx {models[0].n_ctx}, "
        f"threads {llm.n_threads}; load {load_s:.2f}s ({len(models)} contexts), "
        f"llguidance tokenizer {tok_s:.2f}s"
    )
    print(
        f"prompt {len(prompt)} tokens, {sampling}; each mode decoded >= {args.tokens} tokens, "
        f"all modes interleaved step by step ({wall:.0f}s wall)"
    )
    c = modes["constrained"]
    rows = [
        ("ours, constrained (check-first + fast-forward)", c),
        ("ours, constrained (full mask every token)", modes["full_mask"]),
        ("ours, unconstrained (same loop, no grammar)", modes["unconstrained"]),
    ]
    if not args.no_stock:
        rows += [
            ("llama-cpp-python create_completion, unconstrained", modes["stock_unconstrained"]),
            ("llama-cpp-python grammar (response_format path)", modes["stock_grammar"]),
        ]
    for label, mode in rows:
        print(f"{label:<52} {mode.rate:7.1f} tok/s  ({mode.tokens} tokens in {mode.seconds:.1f}s)")
    n = c.notes
    if n:
        print(
            f"  constrained: {n.get('sampled', 0)} sampled + {n.get('forced', 0)} "
            f"fast-forwarded tokens, {n.get('rejections', 0)} sampled tokens refused by the "
            f"grammar (full mask computed); answers closed: {n.get('stop', 0)}; "
            f"rewinds: {n.get('rewinds', 0)} (the tokens they took back are not counted)"
        )
    ratio = c.rate / modes["unconstrained"].rate
    print(f"constrained/unconstrained tok/s: {ratio:.2f}")
    for b in backends:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
