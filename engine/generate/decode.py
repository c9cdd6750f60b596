"""The decoding loop: a loaded model answering under the proposal grammar, token by token.

Why our own loop (see the README's "Constrained decoding"): the stock path masks the whole
vocabulary before every token and silently falls back to "any JSON" when its schema
converter fails. This loop samples first and checks only that token against llguidance's
grammar, computing the full mask only on a rejection (what llama.cpp's own sampler does);
where the schema forces text it evaluates the forced tokens in one batch (fast-forward); and
``PathGuard`` refuses a token that would close a path written before. It runs at parity with
llama-server, so a change here must keep every token the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.generate.llama_model import LoadedModel
from engine.generate.sampling import SamplingParams, TokenSampler


@dataclass(frozen=True)
class DecodeOptions:
    """How the constrained loop uses the grammar.

    ``check_first``: sample first, compute the full mask only when the grammar rejects the
    token (False: the full mask before every token, the stock way). ``fast_forward``: evaluate
    the tokens the grammar forces in one batch.
    """

    check_first: bool = True
    fast_forward: bool = True
    unique_paths: bool = True
    """Forbid the token that would close a ``path`` equal (ignoring case) to an earlier one:
    the grammar cannot express uniqueness, the loop can."""


class PathGuard:
    """Tracks the ``path`` strings of a proposal as its bytes are written.

    The answer is compact JSON under the grammar, so a path value starts right after the
    bytes ``"path":"`` (a key the grammar forces; inside a string every ``"`` is escaped, so
    file content cannot fake it) and ends at the next ``"`` (the path pattern allows no
    escapes). ``closes_duplicate`` says whether a candidate token would end the current path
    equal to one already written, ignoring case.
    """

    KEY = b'"path":"'

    def __init__(self) -> None:
        self.paths: set[str] = set()
        self._tail = b""
        self._current: bytes | None = None
        self.blocked = 0
        """Tokens refused because they would have closed a duplicate path."""

    def _advance(
        self, tail: bytes, current: bytes | None, data: bytes
    ) -> tuple[bytes, bytes | None, list[bytes]]:
        done: list[bytes] = []
        key = self.KEY
        for byte in data:
            if current is not None:
                if byte == 0x22:  # '"' closes the path
                    done.append(current)
                    current, tail = None, b'"'
                else:
                    current += bytes((byte,))
            else:
                tail = (tail + bytes((byte,)))[-len(key) :]
                if tail == key:
                    current, tail = b"", b""
        return tail, current, done

    @staticmethod
    def _norm(path: bytes) -> str:
        return path.decode("utf-8", errors="replace").lower()

    def closes_duplicate(self, piece: bytes) -> bool:
        """Whether writing ``piece`` next would close a path written before."""
        if b'"' not in piece:
            return False
        _tail, _current, done = self._advance(self._tail, self._current, piece)
        return any(self._norm(p) in self.paths for p in done)

    def feed(self, data: bytes) -> None:
        """Record bytes written to the answer."""
        self._tail, self._current, done = self._advance(self._tail, self._current, data)
        self.paths.update(self._norm(p) for p in done)


@dataclass(frozen=True)
class PromptEvaluated:
    """The decoder finished the prompt."""

    prompt_tokens: int
    cached_tokens: int
    seconds: float


@dataclass(frozen=True)
class TokensDecoded:
    """One decoding step: a sampled token plus the tokens the grammar forced after it."""

    tokens: tuple[int, ...]
    data: bytes
    forced: int
    rejected: bool


@dataclass(frozen=True)
class DecodeDone:
    """The decoder stopped: ``stop``, ``length``, ``context``, ``cancelled`` or ``error``."""

    reason: str
    completion_tokens: int
    sampled: int
    forced: int
    rejections: int
    """Sampled tokens the grammar refused (then sampled again from the masked logits)."""
    masks: int
    """Full vocabulary masks computed (rejections, forced text, or every token without
    check-first)."""
    prompt_seconds: float
    decode_seconds: float
    error: str = ""
    path_blocks: int = 0
    """Tokens refused because they would have closed a duplicate path."""


DecodeItem = PromptEvaluated | TokensDecoded | DecodeDone


def decode(
    model: LoadedModel,
    prompt: list[int],
    *,
    matcher: Any | None,
    sampling: SamplingParams,
    max_tokens: int,
    cancel: threading.Event | None = None,
    options: DecodeOptions = DecodeOptions(),
    stop_at_eog: bool = True,
) -> Generator[DecodeItem, None, None]:
    """The decoding loop: prompt (prefix-cached, chunked), then sample/check/fast-forward.

    Without a ``matcher`` it is the same loop unconstrained, ending at an end-of-generation
    token. The last item is always a ``DecodeDone``.

    Args:
        model: the loaded model.
        prompt: the prompt tokens (BOS included).
        matcher: an llguidance ``LLMatcher`` at its start state, or None.
        sampling: the sampling settings.
        max_tokens: the completion token budget.
        cancel: set to stop (checked every token and during prompt processing).
        options: check-first and fast-forward switches.
        stop_at_eog: unconstrained only; False decodes exactly ``max_tokens`` (benchmarks).
    """
    cancel = cancel or threading.Event()
    llm = model.llm
    n_ctx = model.n_ctx
    t0 = time.perf_counter()
    sampled = forced = rejections = masks = completion = 0
    if sampling.dry and sampling.dry_penalty_last_n < 0:  # -1: the whole context
        sampling = replace(sampling, dry_penalty_last_n=n_ctx)
    sampler = TokenSampler(sampling, model.n_vocab, model.vocab)
    guard = PathGuard() if matcher is not None and options.unique_paths else None
    prompt_seconds = 0.0
    t_decode = t0

    def done(reason: str, error: str = "") -> DecodeDone:
        now = time.perf_counter()
        return DecodeDone(
            reason=reason,
            completion_tokens=completion,
            sampled=sampled,
            forced=forced,
            rejections=rejections,
            masks=masks,
            prompt_seconds=prompt_seconds,
            decode_seconds=now - t_decode if completion else 0.0,
            error=error,
            path_blocks=guard.blocked if guard is not None else 0,
        )

    try:
        if cancel.is_set():
            yield done("cancelled")
            return
        cached = model.cached_prefix(prompt)
        try:
            finished = model.eval_prompt(prompt[cached:], cancel)
        except RuntimeError as exc:
            yield done("error", f"llama.cpp failed evaluating the prompt: {exc}")
            return
        prompt_seconds = time.perf_counter() - t0
        if not finished:
            yield done("cancelled")
            return
        yield PromptEvaluated(len(prompt), cached, prompt_seconds)
        for tok in prompt[-sampling.penalty_last_n :]:
            sampler.accept_prompt(tok)
        t_decode = time.perf_counter()
        mask_buf = np.zeros((model.n_vocab + 31) // 32, dtype=np.int32)

        def pick(logits: np.ndarray, allowed: np.ndarray) -> int:
            """Sample among ``allowed``, never a token closing a duplicate path (-1: none)."""
            while True:
                tok = sampler.sample(logits, allowed)
                if guard is None or not guard.closes_duplicate(model.piece(tok)):
                    return tok
                guard.blocked += 1
                allowed[tok] = False
                if not allowed.any():
                    return -1

        def allowed_tokens() -> np.ndarray:
            assert matcher is not None
            matcher.unsafe_compute_mask_ptr(mask_buf.ctypes.data, mask_buf.nbytes)
            bits = np.unpackbits(mask_buf.view(np.uint8), bitorder="little")
            return bits[: model.n_vocab].view(np.bool_)

        if matcher is not None and options.fast_forward:
            # the text every answer starts with (``{"branch_suffix":"``): one batch
            lead = list(matcher.compute_ff_tokens())[: min(max_tokens, n_ctx - int(llm.n_tokens))]
            if lead:
                if not matcher.consume_tokens(lead):
                    yield done("error", f"fast-forward refused: {matcher.get_error()}")
                    return
                for f in lead:
                    sampler.accept(f)
                forced += len(lead)
                completion += len(lead)
                lead_data = b"".join(map(model.piece, lead))
                if guard is not None:
                    guard.feed(lead_data)
                yield TokensDecoded(tuple(lead), lead_data, len(lead), False)
                try:
                    llm.eval(lead)
                except RuntimeError as exc:
                    yield done("error", f"llama.cpp failed decoding: {exc}")
                    return

        while True:
            if cancel.is_set():
                yield done("cancelled")
                return
            if completion >= max_tokens:
                yield done("length")
                return
            if int(llm.n_tokens) >= n_ctx:
                yield done("context")
                return
            logits = model.logits()
            rejected = False
            if matcher is None:
                tok = sampler.sample(logits)
                if stop_at_eog and model.is_eog(tok):
                    yield done("stop")
                    return
            else:
                # Where the grammar forces bytes, llguidance's mask allows only their canonical
                # tokenization while validate_tokens() accepts any token spelling them: mask
                # there (cheap, few tokens allowed) so both paths pick the very same token.
                if options.check_first and not matcher.compute_ff_bytes():
                    tok = sampler.sample(logits)
                    if matcher.validate_tokens([tok]) != 1 or (
                        guard is not None and guard.closes_duplicate(model.piece(tok))
                    ):
                        rejected = True
                        rejections += 1
                        masks += 1
                        tok = pick(logits, allowed_tokens())
                else:
                    masks += 1
                    tok = pick(logits, allowed_tokens())
                if tok < 0:
                    yield done("error", "no token left that keeps the paths unique")
                    return
                if not matcher.consume_token(tok):
                    yield done("error", f"the grammar refused token {tok}: {matcher.get_error()}")
                    return
            sampler.accept(tok)
            sampled += 1
            step = [tok]
            if matcher is not None and options.fast_forward and not matcher.is_stopped():
                room = min(max_tokens - completion - 1, n_ctx - int(llm.n_tokens) - 1)
                ff = list(matcher.compute_ff_tokens())[: max(room, 0)]
                if ff:
                    if not matcher.consume_tokens(ff):
                        yield done("error", f"fast-forward refused: {matcher.get_error()}")
                        return
                    for f in ff:
                        sampler.accept(f)
                    forced += len(ff)
                    step.extend(ff)
            completion += len(step)
            stopped = matcher is not None and matcher.is_stopped()
            data = b"".join(model.piece(t) for t in step if not (stopped and model.is_eog(t)))
            if guard is not None:
                guard.feed(data)
            yield TokensDecoded(tuple(step), data, len(step) - 1, rejected)
            if stopped:
                yield done("stop")
                return
            try:
                llm.eval(step)
            except RuntimeError as exc:
                yield done("error", f"llama.cpp failed decoding: {exc}")
                return
    finally:
        sampler.close()


__all__ = [
    "DecodeDone",
    "DecodeItem",
    "DecodeOptions",
    "PathGuard",
    "PromptEvaluated",
    "TokensDecoded",
    "decode",
]
