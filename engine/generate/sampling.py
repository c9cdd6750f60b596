"""Sampling for the decoding loop: llama.cpp's sampler chain on a candidates array we own.

Why our own array: ``llama_sampler_sample`` would also *accept* the token it picks into the
repetition-penalty history, but with check-first sampling a picked token may still be
rejected by the grammar. Owning the candidates lets the loop accept only final tokens and
sample again from masked logits. Settings come from any model profile (``SamplingParams``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.core.config import ProfileBase
from engine.core.errors import BackendError


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings, as llama.cpp interprets them.

    ``temperature`` 0 is greedy decoding; ``top_k`` 0 and ``top_p`` 1.0 disable those stages;
    ``repeat_penalty`` 1.0 disables the penalty over the last ``penalty_last_n`` tokens;
    ``dry_multiplier`` 0 disables DRY (the penalty on extending a repeated sequence).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    seed: int = 0
    repeat_penalty: float = 1.0
    penalty_last_n: int = 64
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", '"', "*")

    @classmethod
    def from_profile(cls, profile: ProfileBase) -> SamplingParams:
        """The sampling settings of a model profile (every profile type has them)."""
        return cls(
            temperature=profile.temperature,
            top_p=profile.top_p,
            top_k=profile.top_k,
            seed=profile.seed,
            repeat_penalty=profile.repeat_penalty,
            dry_multiplier=profile.dry_multiplier,
            dry_base=profile.dry_base,
            dry_allowed_length=profile.dry_allowed_length,
            dry_penalty_last_n=profile.dry_penalty_last_n,
            dry_sequence_breakers=tuple(profile.dry_sequence_breakers),
        )

    @property
    def dry(self) -> bool:
        """Whether DRY sampling is on."""
        return self.dry_multiplier > 0.0 and self.dry_penalty_last_n != 0

    @property
    def greedy_argmax(self) -> bool:
        """Whether sampling is a plain argmax (greedy, no penalty)."""
        return self.temperature <= 0.0 and self.repeat_penalty == 1.0 and not self.dry


_CANDIDATE_DTYPE = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class TokenSampler:
    """llama.cpp's sampler chain applied to a candidates array owned by this object.

    ``llama_sampler_sample`` would also *accept* the token it picks (pushing it into the
    repetition-penalty history); with check-first sampling a picked token may be rejected by
    the grammar, so tokens are accepted explicitly with ``accept`` once they are final, the way
    llama.cpp's ``common_sampler`` does.

    DRY is a sampler of its own, applied before the chain and fed only the answer's tokens
    (``accept``), not the prompt's (``accept_prompt``): it stops the answer repeating itself
    without penalising what the answer copies from the prompt (a worked example, the file it
    edits).

    Args:
        params: the sampling settings.
        n_vocab: the logits width.
        vocab: the model's ``llama_vocab`` pointer (needed by DRY to read the breakers).
    """

    def __init__(self, params: SamplingParams, n_vocab: int, vocab: Any = None) -> None:
        import llama_cpp

        self._lc = llama_cpp
        self.params = params
        self.n_vocab = n_vocab
        self._chain: Any = None
        self._dry: Any = None
        self._cand = np.zeros(n_vocab, dtype=_CANDIDATE_DTYPE)
        self._ids = np.arange(n_vocab, dtype=np.intc)
        self._array = llama_cpp.llama_token_data_array(
            data=self._cand.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )
        if params.dry:
            if vocab is None:
                raise BackendError("DRY sampling needs the model's vocabulary")
            breakers = [b.encode("utf-8") for b in params.dry_sequence_breakers]
            array = (ctypes.c_char_p * max(len(breakers), 1))(*breakers)
            self._dry = llama_cpp.llama_sampler_init_dry(
                vocab,
                params.dry_multiplier,
                params.dry_base,
                params.dry_allowed_length,
                params.dry_penalty_last_n,
                array,
                len(breakers),
            )
        if params.temperature <= 0.0 and params.repeat_penalty == 1.0:
            return  # greedy: an argmax (after DRY, when on)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if params.repeat_penalty != 1.0:
            llama_cpp.llama_sampler_chain_add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, params.penalty_last_n, params.repeat_penalty, 0.0, 0.0
                ),
            )
        if params.temperature <= 0.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                llama_cpp.llama_sampler_chain_add(
                    chain, llama_cpp.llama_sampler_init_top_k(params.top_k)
                )
            if params.top_p < 1.0:
                llama_cpp.llama_sampler_chain_add(
                    chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1)
                )
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_temp(params.temperature)
            )
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_dist(params.seed & 0xFFFFFFFF)
            )
        self._chain = chain

    def sample(self, logits: np.ndarray, allowed: np.ndarray | None = None) -> int:
        """Pick a token from ``logits``; only among ``allowed`` (a bool array) when given."""
        if self._chain is None and self._dry is None:
            if allowed is None:
                return int(np.argmax(logits))
            return int(np.argmax(np.where(allowed, logits, -np.inf)))
        cand = self._cand
        cand["id"] = self._ids
        cand["logit"] = logits
        cand["p"] = 0.0
        if allowed is not None:
            np.copyto(cand["logit"], -np.inf, where=~allowed)
        self._array.size = self.n_vocab
        self._array.selected = -1
        self._array.sorted = False
        if self._dry is not None:
            self._lc.llama_sampler_apply(self._dry, ctypes.byref(self._array))
        if self._chain is None:  # greedy after DRY (which changes logits in place)
            return int(self._cand["id"][int(np.argmax(self._cand["logit"]))])
        self._lc.llama_sampler_apply(self._chain, ctypes.byref(self._array))
        selected = int(self._array.selected)
        if selected < 0:
            raise BackendError("llama.cpp's sampler selected no token")
        # the samplers may have moved the data pointer (they sort in place or re-point it)
        data = self._array.data
        return int(data[selected].id)

    def accept(self, token: int) -> None:
        """Record a final token of the answer (repetition-penalty and DRY history)."""
        if self._chain is not None:
            self._lc.llama_sampler_accept(self._chain, token)
        if self._dry is not None:
            self._lc.llama_sampler_accept(self._dry, token)

    def accept_prompt(self, token: int) -> None:
        """Record a prompt token (repetition-penalty history only, not DRY's)."""
        if self._chain is not None:
            self._lc.llama_sampler_accept(self._chain, token)

    def restart(self, prompt: list[int], answer: list[int]) -> None:
        """Forget the history and record it again as ``prompt`` then ``answer`` (the loop
        took tokens back: the penalties must not count tokens that are no longer there).
        The random generator starts again from the seed."""
        if self._chain is not None:
            self._lc.llama_sampler_reset(self._chain)
            for tok in prompt[-self.params.penalty_last_n :]:  # as the loop's prompt() does
                self._lc.llama_sampler_accept(self._chain, tok)
        if self._dry is not None:
            self._lc.llama_sampler_reset(self._dry)
        for tok in answer:
            self.accept(tok)

    def close(self) -> None:
        """Free the llama.cpp samplers."""
        if self._chain is not None:
            self._lc.llama_sampler_free(self._chain)
            self._chain = None
        if self._dry is not None:
            self._lc.llama_sampler_free(self._dry)
            self._dry = None

    def __del__(self) -> None:
        self.close()


__all__ = ["SamplingParams", "TokenSampler"]
