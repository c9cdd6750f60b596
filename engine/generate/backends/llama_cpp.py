"""llama.cpp in-process: a GGUF model answering under the proposal grammar, streamed as events.

Why our own decoding loop instead of llama-cpp-python's ``response_format``: the stock path
masks the whole vocabulary with the grammar before every token (262,144 tokens for Gemma 3)
and silently falls back to "any JSON" when its schema converter fails. This loop is built on
llama-cpp-python's low-level API (``Llama`` for the model, context and ``eval``; the logits
read directly from the context) and llguidance:

* **check-first sampling** (what llama.cpp's own sampler does): sample from the raw logits with
  llama.cpp's sampler chain, check only that token against the grammar, and compute the full
  token mask only when it is rejected (then sample again from the masked logits);
* **fast-forward**: where the schema forces text (``","commit_message":"``), llguidance's
  ``compute_ff_tokens`` gives the tokens and they are evaluated in one batch, not one decode
  step each.

The same loop runs without a grammar (the benchmark's honest baseline) or with the full mask
every token (``DecodeOptions(check_first=False)``, the reference the tests compare against).

Sampling is llama.cpp's sampler chain (penalties, top-k, top-p, temperature, seeded
distribution; greedy at temperature 0) applied to a candidates array this module owns, so a
token the grammar rejects is never *accepted* into the repetition-penalty history.

The model loads lazily once per backend instance (the registry keeps one instance per
profile for the process); one generation runs at a time per instance (a lock); the KV cache
of the longest shared prompt prefix is reused by the next generation.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.config import LlamaCppProfile, ProfileBase
from engine.core.errors import AgentTuiError, BackendError, ConfigError, ModelLoadError
from engine.core.events import (
    BackendFailed,
    Cancelled,
    GenerationEvent,
    GenerationStats,
    PromptProcessed,
    PromptTooLong,
    TokensGenerated,
)
from engine.generate.backends.base import Backend, GenerationRequest
from engine.generate.grammar import build_grammar, forget_tokenizer, new_matcher, tokenizer_for
from engine.generate.modelfile import resolve_gguf
from engine.generate.stream import ProposalStream, partial_parse

log = logging.getLogger("agent_tui.llama_cpp")

#: Serialises loads while ``_model_params`` swaps llama-cpp-python's default-params function.
_PARAMS_LOCK = threading.Lock()


def system_info() -> str:
    """llama.cpp's build and CPU features (``CPU : SSE3 = 1 | … | AMX_INT8 = 1 | …``)."""
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace")


def cpu_extra_buffers(setting: bool | None, info: str) -> bool:
    """Whether llama.cpp may move weights into its extra CPU buffers (repack, AMX).

    Args:
        setting: the profile's ``cpu_extra_buffers`` (None: decide from the build).
        info: ``llama_print_system_info()``'s text (:func:`system_info`).

    Returns:
        ``setting`` when set; otherwise False where the build uses AMX (its Q4_K matrix
        multiply crashes with SIGSEGV on some Sapphire Rapids class CPUs, the first prompt
        batch killing the process) and True elsewhere.
    """
    if setting is not None:
        return setting
    return "AMX_INT8 = 1" not in info


def new_llama(extra_buffers: bool | None = None, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)`` with the engine's CPU safeguard (see
    :func:`cpu_extra_buffers`); every computing load in the project goes through here.

    Args:
        extra_buffers: a profile's ``cpu_extra_buffers`` (None: decide from the build).
        **kwargs: ``llama_cpp.Llama``'s arguments.
    """
    import llama_cpp

    with cpu_safeguard(extra_buffers):
        return llama_cpp.Llama(**kwargs)


def cpu_safeguard(extra_buffers: bool | None = None) -> contextlib.AbstractContextManager[None]:
    """While it is open, llama.cpp models load with :func:`cpu_extra_buffers`'s decision.

    For :func:`new_llama`, and for code that lets a library load the model itself (the
    tests start the real ``llama_cpp.server`` inside it).
    """
    return _model_params(use_extra_bufts=cpu_extra_buffers(extra_buffers, system_info()))


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """Make ``llama_cpp.Llama`` build its model parameters with ``fields`` set.

    ``Llama.__init__`` takes ``llama_model_default_params()`` and sets only the fields it has
    arguments for; ``use_extra_bufts`` is not one of them. The function is swapped for the
    duration of one load, under a lock.
    """
    import llama_cpp.llama as llama_module

    lib = llama_module.llama_cpp
    original = lib.llama_model_default_params

    def with_fields() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    with _PARAMS_LOCK:
        lib.llama_model_default_params = with_fields
        try:
            yield
        finally:
            lib.llama_model_default_params = original


# --------------------------------------------------------------------------------------------
# Sampling


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


# --------------------------------------------------------------------------------------------
# Chat templates


def format_gemma(messages: list[dict[str, str]]) -> str:
    """Gemma's chat format, with system messages folded into the first user turn.

    Gemma has no system role. Its own chat template (the ``tokenizer_config.json`` Jinja
    template) prepends the system text to the first user message followed by a blank line;
    llama-cpp-python's ``gemma`` format instead *drops* system messages, which would silently
    lose the whole agent prompt, so this follows Gemma's template. The BOS token is added by the
    tokenizer, not written here.
    """
    system = "\n\n".join(m["content"].strip() for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if not turns or turns[0]["role"] != "user":
        turns = [{"role": "user", "content": ""}, *turns]
    out = []
    for i, m in enumerate(turns):
        role = "model" if m["role"] == "assistant" else "user"
        content = m["content"].strip()
        if i == 0 and system:
            content = f"{system}\n\n{content}" if content else system
        out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    out.append("<start_of_turn>model\n")
    return "".join(out)


def _stock_formatter(name: str) -> Any:
    from llama_cpp import llama_chat_format

    for candidate in (name.replace("-", "_"), name.replace("-", "")):
        fn = getattr(llama_chat_format, f"format_{candidate}", None)
        if callable(fn):
            return fn
    return None


def known_chat_formats() -> list[str]:
    """The chat format names a profile's ``chat_format`` may take."""
    from llama_cpp import llama_chat_format

    names = {n[len("format_") :] for n in dir(llama_chat_format) if n.startswith("format_")}
    return sorted(names | {"gemma"})


def format_chat(
    messages: list[dict[str, str]],
    *,
    chat_format: str | None,
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    profile_name: str = "",
) -> tuple[str, bool]:
    """The prompt text of ``messages`` and whether it already contains the BOS token.

    The profile's ``chat_format`` wins when set; else the GGUF's own Jinja template.

    Raises:
        ConfigError: no template at all, or an unknown ``chat_format``.
        BackendError: the GGUF's template failed to render these messages.
    """
    label = f"profile {profile_name!r}: " if profile_name else ""
    if chat_format:
        if chat_format == "gemma":
            return format_gemma(messages), False
        fn = _stock_formatter(chat_format)
        if fn is None:
            raise ConfigError(
                f"{label}unknown chat_format {chat_format!r}",
                hint=f"use one of: {', '.join(known_chat_formats())}; or remove chat_format to "
                "use the GGUF's own chat template",
            )
        response = fn(messages=messages)
        return str(response.prompt), bool(getattr(response, "added_special", False))
    if template:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            response = Jinja2ChatFormatter(
                template=template, eos_token=eos_token, bos_token=bos_token
            )(messages=messages)  # type: ignore[arg-type]
        except Exception as exc:  # a template's own error, reported with its words
            raise BackendError(
                f"{label}the GGUF's chat template failed: {exc}",
                hint="set chat_format in the profile to override the model's template",
            ) from exc
        return str(response.prompt), True
    raise ConfigError(
        f"{label}the GGUF has no chat template and the profile sets no chat_format",
        hint=f"set chat_format in the profile (one of: {', '.join(known_chat_formats())})",
    )


# --------------------------------------------------------------------------------------------
# The decoding loop


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


class LoadedModel:
    """A loaded GGUF: the ``Llama``, its vocabulary, and what the loop needs from it."""

    def __init__(self, llm: Any, model_key: str, path: Path) -> None:
        import llama_cpp

        self._lc = llama_cpp
        self.llm = llm
        self.path = path
        self.model_key = model_key
        self.vocab = llm._model.vocab
        self.n_vocab = int(llm.n_vocab())
        self.n_ctx = int(llm.n_ctx())
        self.n_batch = int(llm.n_batch)
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._abort_cb: Any = None
        self._abort_flag: threading.Event | None = None
        self._tok_thread: threading.Thread | None = None
        self._tok_error: Exception | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.llm.metadata)

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def token_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def piece(self, token: int) -> bytes:
        """The bytes of ``token`` (empty for control tokens)."""
        cached = self._pieces.get(token)
        if cached is None:
            n = self._lc.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
            cached = bytes(self._piece_buf.raw[: max(n, 0)])
            self._pieces[token] = cached
        return cached

    def is_eog(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_is_eog(self.vocab, token))

    def start_tokenizer(self) -> None:
        """Build llguidance's tokenizer in the background (about 1.4 s for 262k tokens).

        Started on load so that it is ready, off the critical path, by the first generation.
        """
        if self._tok_thread is None:
            self._tok_thread = threading.Thread(
                target=self._build_tokenizer, name="llguidance-tokenizer", daemon=True
            )
            self._tok_thread.start()

    def _build_tokenizer(self) -> None:
        try:
            tokenizer_for(self.model_key, self.vocab, self.n_vocab)
        except Exception as exc:  # reported by tokenizer() in the caller's thread
            self._tok_error = exc

    def tokenizer(self) -> Any:
        """llguidance's tokenizer for this model (built once per model file)."""
        if self._tok_thread is not None:
            self._tok_thread.join()
        if self._tok_error is not None:
            raise BackendError(f"llguidance could not read the vocabulary: {self._tok_error}")
        return tokenizer_for(self.model_key, self.vocab, self.n_vocab)

    def logits(self) -> np.ndarray:
        """The logits of the last evaluated token (a view into llama.cpp's buffer)."""
        ptr = self._lc.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def cached_prefix(self, prompt: list[int]) -> int:
        """Reuse the KV cache of the longest common prefix; returns the tokens kept."""
        llm = self.llm
        n = min(int(llm.n_tokens), len(prompt))
        keep = 0
        if n > 0:
            diff = np.nonzero(llm.input_ids[:n] != np.asarray(prompt[:n], dtype=np.intc))[0]
            keep = int(diff[0]) if len(diff) else n
        if keep >= len(prompt):
            keep = len(prompt) - 1  # re-evaluate one token: its logits start the answer
        if keep > 0 and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            keep = 0
        if keep <= 0:
            llm.reset()
            keep = 0
        else:
            llm.n_tokens = keep
        return keep

    def _set_abort(self, flag: threading.Event | None) -> None:
        """llama.cpp's abort callback: stops a long prompt batch mid-way on cancel."""
        lc = self._lc
        if flag is None:
            self._abort_flag = None
            lc.llama_set_abort_callback(self.llm.ctx, lc.ggml_abort_callback(), None)
            self._abort_cb = None
            return
        self._abort_flag = flag

        def should_abort(_data: Any) -> bool:
            try:
                return flag.is_set()
            except BaseException:  # an exception cannot cross into C: abort the batch instead
                return True

        self._abort_cb = lc.ggml_abort_callback(should_abort)
        lc.llama_set_abort_callback(self.llm.ctx, self._abort_cb, None)

    def eval_prompt(self, tokens: list[int], cancel: threading.Event) -> bool:
        """Evaluate ``tokens`` in chunks of ``n_batch``; False when cancelled part-way.

        The last token is always evaluated on its own: llama.cpp's CPU kernels round
        differently for one token than for a batch, so a prompt whose prefix was cached (only
        its last token evaluated) must see the same logits as the same prompt evaluated cold,
        or a sampled answer would not reproduce with the same seed.
        """
        step = self.n_batch
        body = len(tokens) - 1
        chunks = [tokens[i : min(i + step, body)] for i in range(0, body, step)]
        chunks.append(tokens[body:])
        self._set_abort(cancel)
        try:
            for chunk in chunks:
                if cancel.is_set():
                    return False
                try:
                    self.llm.eval(chunk)
                except RuntimeError:
                    if cancel.is_set():
                        return False
                    raise
        finally:
            self._set_abort(None)
        return not cancel.is_set()

    def close(self) -> None:
        """Free the model; its llguidance tokenizer goes too (it points into the vocab)."""
        if self._tok_thread is not None:
            self._tok_thread.join()
        forget_tokenizer(self.model_key, self.vocab)
        self.llm.close()


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


# --------------------------------------------------------------------------------------------
# The backend


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LlamaCppBackend(Backend[LlamaCppProfile]):
    """A GGUF model in-process via llama-cpp-python, under llguidance's grammar."""

    kind = "llama_cpp"
    CAN_CANCEL = True
    CONCURRENT = False
    PREFIX_CACHE = True
    EXACT_TOKEN_COUNT = True

    def __init__(self, name: str, profile: LlamaCppProfile) -> None:
        super().__init__(name, profile)
        self._model: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._gen_owner: int | None = None
        self.warnings: list[str] = []
        """Warnings from loading (e.g. GPU offload asked for but unavailable)."""
        self.last_tokens: list[int] = []
        """The completion tokens of the last generation (tests, debugging)."""

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> LoadedModel:
        """Load the model now (it loads lazily otherwise).

        Raises:
            ModelLoadError: the file is missing, not a GGUF, or llama.cpp cannot load it.
        """
        with self._load_lock:
            if self._model is not None:
                return self._model
            profile: LlamaCppProfile = self.profile
            path = resolve_gguf(profile, self.name)
            import llama_cpp

            if profile.n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
                msg = (
                    f"profile {self.name!r} asks for n_gpu_layers={profile.n_gpu_layers} but "
                    "this llama-cpp-python build cannot offload to a GPU: running on the CPU "
                    "(rebuild it with CUDA/Metal, see the README's 'GPU build')"
                )
                self.warnings.append(msg)
                log.warning(msg)
            threads = profile.n_threads or _default_threads()
            t0 = time.perf_counter()
            try:
                llm = new_llama(
                    profile.cpu_extra_buffers,
                    model_path=str(path),
                    n_ctx=profile.n_ctx,
                    n_batch=profile.n_batch,
                    n_ubatch=profile.n_batch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=profile.n_gpu_layers,
                    flash_attn=profile.flash_attn,
                    seed=profile.seed,
                    swa_full=True,  # keep the whole prompt for prefix reuse (SWA models)
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise ModelLoadError(
                    f"profile {self.name!r}: llama.cpp could not load {path}: {exc}",
                    hint="check that the file is a complete GGUF this llama.cpp version "
                    "supports, and that n_ctx/n_gpu_layers fit the machine's memory",
                ) from exc
            stat = path.stat()
            key = f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
            self._model = LoadedModel(llm, key, path)
            self._model.start_tokenizer()
            log.info("loaded %s in %.2fs", path.name, time.perf_counter() - t0)
            return self._model

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    def close(self) -> None:
        """Free the model (the next use loads it again)."""
        with self._load_lock:
            if self._model is not None:
                self._model.close()
                self._model = None

    # -- prompts ---------------------------------------------------------------------------

    def format_prompt(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        """The formatted prompt text and whether it already holds the BOS token."""
        model = self.load()
        llm = model.llm
        template = model.metadata.get("tokenizer.chat_template")
        bos = llm._model.token_get_text(int(llm.token_bos())) if llm.token_bos() >= 0 else ""
        eos = llm._model.token_get_text(int(llm.token_eos())) if llm.token_eos() >= 0 else ""
        return format_chat(
            messages,
            chat_format=self.profile.chat_format,
            template=template,
            bos_token=bos,
            eos_token=eos,
            profile_name=self.name,
        )

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Exactly the tokens ``generate`` evaluates for ``messages``."""
        text, has_bos = self.format_prompt(messages)
        model = self.load()
        add_bos = not has_bos and bool(model.llm._model.add_bos_token())
        return model.tokenize(text, add_bos=add_bos, special=True)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the formatted prompt (chat template and BOS included)."""
        return len(self.prompt_tokens(messages))

    def count_text(self, text: str) -> int:
        """Tokens of ``text`` alone (no template, no BOS, special tokens as text)."""
        return len(self.load().tokenize(text, add_bos=False, special=False))

    # -- generation ------------------------------------------------------------------------

    def decode(
        self,
        prompt: list[int],
        *,
        schema: dict[str, Any] | None,
        sampling: SamplingParams | None = None,
        max_tokens: int | None = None,
        cancel: threading.Event | None = None,
        options: DecodeOptions = DecodeOptions(),
        stop_at_eog: bool = True,
    ) -> Iterator[DecodeItem]:
        """The raw decoding loop (benchmarks, tests): no events, no validation.

        ``schema`` None runs unconstrained. Holds the generation lock while iterating.
        """
        model = self.load()
        matcher = None
        if schema is not None:
            matcher = new_matcher(model.tokenizer(), build_grammar(schema))
        with self._generation_slot():
            yield from decode(
                model,
                prompt,
                matcher=matcher,
                sampling=sampling or SamplingParams.from_profile(self.profile),
                max_tokens=max_tokens or self.profile.max_tokens,
                cancel=cancel,
                options=options,
                stop_at_eog=stop_at_eog,
            )

    def _generation_slot(self) -> Any:
        backend = self

        class _Slot:
            def __enter__(self) -> None:
                me = threading.get_ident()
                if backend._gen_owner == me:
                    raise BackendError(
                        f"profile {backend.name!r}: a generation is already running in this "
                        "thread; finish or close its event iterator first"
                    )
                backend._gen_lock.acquire()
                backend._gen_owner = me

            def __exit__(self, *exc: object) -> None:
                backend._gen_owner = None
                backend._gen_lock.release()

        return _Slot()

    def generate(
        self,
        request: GenerationRequest,
        cancel: threading.Event | None = None,
        *,
        sampling: SamplingParams | None = None,
        options: DecodeOptions = DecodeOptions(),
    ) -> Iterator[GenerationEvent]:
        """Stream events for ``request``; the last is ``Finished`` or a ``GenerationFailed``.

        Args:
            request: the chat messages, schema and token budget.
            cancel: set to stop within one token (also during prompt processing).
            sampling: overrides the profile's sampling settings.
            options: check-first / fast-forward switches (the defaults are the fast path).
        """
        cancel = cancel or threading.Event()
        stats = GenerationStats(backend=self.kind, model=self.name)
        max_tokens = request.max_tokens or self.profile.max_tokens
        try:
            model = self.load()
            t0 = time.perf_counter()  # TTFT counts from here: model loading is not per request
            prompt = self.prompt_tokens(request.messages)
            matcher = new_matcher(model.tokenizer(), build_grammar(request.schema))
        except AgentTuiError as exc:
            yield BackendFailed(message=exc.render(), hint=exc.hint, stats=stats)
            return
        stats = replace(stats, prompt_tokens=len(prompt))
        if len(prompt) + max_tokens > model.n_ctx:
            yield PromptTooLong(
                message=f"the prompt takes {len(prompt)} tokens and the answer reserves "
                f"{max_tokens}: {len(prompt) + max_tokens} > n_ctx {model.n_ctx} of profile "
                f"{self.name!r}",
                hint="raise n_ctx in the profile, lower max_tokens, or give the model less context",
                stats=stats,
                prompt_tokens=len(prompt),
                n_ctx=model.n_ctx,
                reserved=max_tokens,
            )
            return
        try:
            slot = self._generation_slot()
            slot.__enter__()
        except BackendError as exc:
            yield BackendFailed(message=exc.message, hint=exc.hint, stats=stats)
            return
        try:
            yield from self._generate_locked(
                model, prompt, matcher, request, cancel, sampling, options, max_tokens, stats, t0
            )
        finally:
            slot.__exit__(None, None, None)

    def _generate_locked(
        self,
        model: LoadedModel,
        prompt: list[int],
        matcher: Any,
        request: GenerationRequest,
        cancel: threading.Event,
        sampling: SamplingParams | None,
        options: DecodeOptions,
        max_tokens: int,
        stats: GenerationStats,
        t0: float,
    ) -> Iterator[GenerationEvent]:
        stream = ProposalStream(
            stats, max_files=request.max_files, issue_number=request.issue_number
        )
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens: list[int] = []
        self.last_tokens = tokens
        ttft = 0.0
        cached = 0
        t_first = 0.0
        if sampling is None:
            sampling = SamplingParams.from_profile(self.profile)
            if request.temperature is not None:
                sampling = replace(sampling, temperature=request.temperature)
            if request.seed is not None:
                sampling = replace(sampling, seed=request.seed)
        loop = decode(
            model,
            prompt,
            matcher=matcher,
            sampling=sampling,
            max_tokens=max_tokens,
            cancel=cancel,
            options=options,
        )
        result: DecodeDone | None = None
        try:
            for item in loop:
                if isinstance(item, PromptEvaluated):
                    cached = item.cached_tokens
                    yield PromptProcessed(item.prompt_tokens, item.cached_tokens, item.seconds)
                    t_first = time.perf_counter()
                elif isinstance(item, TokensDecoded):
                    now = time.perf_counter()
                    if not tokens:
                        ttft = now - t0
                    tokens.extend(item.tokens)
                    text = utf8.decode(item.data)
                    elapsed = now - t_first
                    yield TokensGenerated(
                        text=text,
                        completion_tokens=len(tokens),
                        tokens_per_s=len(tokens) / elapsed if elapsed > 0 else 0.0,
                        elapsed_s=now - t0,
                    )
                    yield from stream.feed(text)
                    if stream.loop is not None:
                        break
                else:
                    result = item
        finally:
            loop.close()
        tail = utf8.decode(b"", final=True)
        if tail:
            yield from stream.feed(tail)
        decode_s = result.decode_seconds if result else time.perf_counter() - t_first
        stats = replace(
            stats,
            cached_prompt_tokens=cached,
            completion_tokens=len(tokens),
            ttft_s=ttft,
            elapsed_s=time.perf_counter() - t0,
            tokens_per_s=len(tokens) / decode_s if decode_s > 0 else 0.0,
        )
        if stream.loop is not None:
            yield stream.finish("loop", stats)
            return
        assert result is not None
        if result.reason == "cancelled":
            yield Cancelled(
                message=f"cancelled after {len(tokens)} tokens",
                hint="regenerate when ready; the prompt prefix stays cached",
                partial=partial_parse(stream.text),
                raw=stream.text,
                stats=replace(stats, finish_reason="cancelled"),
            )
            return
        if result.reason == "error":
            yield BackendFailed(
                message=f"profile {self.name!r}: {result.error}",
                hint="this is a bug in agent-tui or llama.cpp; report it with the model name",
                partial=partial_parse(stream.text),
                raw=stream.text,
                stats=replace(stats, finish_reason="error"),
            )
            return
        yield stream.finish(result.reason, stats)


__all__ = [
    "DecodeDone",
    "DecodeOptions",
    "LlamaCppBackend",
    "LoadedModel",
    "PromptEvaluated",
    "SamplingParams",
    "TokenSampler",
    "TokensDecoded",
    "decode",
    "format_chat",
    "format_gemma",
    "known_chat_formats",
]
