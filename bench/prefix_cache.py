"""Time to first token, cold vs warm prefix cache, side by side in one run.

Usage: ``python bench/prefix_cache.py [--rounds 3] [--context-lines 120] [--profile NAME]``

Cold: the KV cache is emptied, the whole prompt (the Backend Dev Agent system prompt plus a
block of repository context plus the issue) is evaluated. Warm: the same issue is generated
again right after, so only the last prompt token is evaluated again. Also shown: a *different*
issue after the same system prompt and repository context (the shared prefix is reused, the
new issue text is evaluated). Rounds alternate cold and warm so load on the machine hits both.

The last line is ``warm/cold TTFT: R`` (median warm TTFT / median cold TTFT).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.config import LlamaCppProfile, load_config  # noqa: E402
from engine.core.events import Finished, GenerationFailed, PromptProcessed  # noqa: E402
from engine.generate.backends.base import GenerationRequest  # noqa: E402
from engine.generate.backends.llama_cpp import LlamaCppBackend  # noqa: E402


def repo_context(lines: int) -> str:
    """A block of real source code from this repository, as a context builder would add."""
    out: list[str] = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for line in path.read_text(encoding="utf-8").splitlines():
            out.append(line)
            if len(out) >= lines:
                return "\n".join(out)
    return "\n".join(out)


def request(system: str, context: str, issue: str) -> GenerationRequest:
    return GenerationRequest(
        messages=[
            {"role": "system", "content": f"{system}\n\n## Repository\n```python\n{context}\n```"},
            {"role": "user", "content": issue},
        ],
        max_tokens=8,
    )


def ttft(backend: LlamaCppBackend, req: GenerationRequest) -> tuple[float, int, int]:
    """(TTFT seconds, prompt tokens, cached tokens) of one generation."""
    cached = prompt = 0
    for event in backend.generate(req):
        if isinstance(event, PromptProcessed):
            prompt, cached = event.prompt_tokens, event.cached_prompt_tokens
        if isinstance(event, Finished | GenerationFailed):
            if event.stats.ttft_s <= 0:
                raise SystemExit(f"no token was generated: {event}")
            return event.stats.ttft_s, prompt, cached
    raise SystemExit("the stream ended without a final event")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--context-lines", type=int, default=120)
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: the profile's)"
    )
    parser.add_argument("--n-ctx", type=int, default=8192)
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
    backend = LlamaCppBackend(name, profile)
    model = backend.load()
    model.tokenizer()
    system = (ROOT / "prompts" / "backend-dev.md").read_text(encoding="utf-8")
    context = repo_context(args.context_lines)
    issue_a = "Issue #12: add GET /api/v1/health returning the status and the app version."
    issue_b = "Issue #13: return 404 with a JSON error when an item id does not exist."
    same = request(system, context, issue_a)
    other = request(system, context, issue_b)

    cold: list[float] = []
    warm: list[float] = []
    shared: list[float] = []
    ttft(backend, same)  # warm-up: first-call costs paid before measuring
    sizes = (0, 0, 0)
    for _ in range(args.rounds):
        model.llm.reset()  # an empty KV cache: the cold case
        t, prompt, cached = ttft(backend, same)
        assert cached == 0, cached
        cold.append(t)
        t, _, cached_w = ttft(backend, same)
        warm.append(t)
        t, _, cached_s = ttft(backend, other)
        shared.append(t)
        ttft(backend, same)  # back to issue A for the next round's cold start
        sizes = (prompt, cached_w, cached_s)

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:7.1f} ms  (min {min(xs) * 1000:.1f})"

    prompt, cached_w, cached_s = sizes
    print(
        f"model {model.path.name}, n_ctx {model.n_ctx}, threads {model.llm.n_threads}; "
        f"prompt {prompt} tokens (system prompt + {args.context_lines} lines of repository "
        f"context + issue), {args.rounds} rounds"
    )
    print(f"cold  (empty KV cache, {prompt} tokens evaluated):      {fmt(cold)}")
    print(f"warm  (same issue again, {cached_w} tokens reused):      {fmt(warm)}")
    print(f"other issue, same prefix ({cached_s} tokens reused):     {fmt(shared)}")
    ratio = statistics.median(warm) / statistics.median(cold)
    print(f"warm/cold TTFT: {ratio:.3f}")
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
