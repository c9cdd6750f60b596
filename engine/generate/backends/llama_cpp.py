"""llama.cpp in-process: a GGUF model answering under the proposal grammar, streamed as events.

Why our own decoding loop instead of llama-cpp-python's ``response_format``: the stock path
masks the whole vocabulary with the grammar before every token (262,144 tokens for Gemma 3)
and silently falls back to "any JSON" when its schema converter fails. The loop
(``engine.generate.decode``: check-first sampling, fast-forward, unique paths) runs on
llama-cpp-python's low-level API and llguidance, with llama.cpp's sampler chain applied to a
candidates array of our own (``engine.generate.sampling``), prompts formatted by
``engine.generate.chat_formats`` and the model loaded by ``engine.generate.llama_model``.
This module is the backend around them: it turns the loop's items into events.

The model loads lazily once per backend instance (the registry keeps one instance per
profile for the process); one generation runs at a time per instance (a lock); the KV cache
of the longest shared prompt prefix is reused by the next generation.
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from engine.core.config import LlamaCppProfile
from engine.core.errors import AgentTuiError, BackendError, ModelLoadError
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
from engine.generate.chat_formats import format_chat
from engine.generate.decode import (
    DecodeDone,
    DecodeItem,
    DecodeOptions,
    PromptEvaluated,
    Rewound,
    TokensDecoded,
    decode,
)
from engine.generate.grammar import build_grammar, new_matcher
from engine.generate.llama_model import LoadedModel, new_llama
from engine.generate.modelfile import resolve_gguf
from engine.generate.sampling import SamplingParams
from engine.generate.stream import ProposalStream, partial_parse

log = logging.getLogger("agent_tui.llama_cpp")

#: The default decoding options: check-first, fast-forward, unique paths (frozen: one
#: instance serves every call).
FAST_PATH = DecodeOptions()


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
        options: DecodeOptions = FAST_PATH,
        stop_at_eog: bool = True,
    ) -> Iterator[DecodeItem]:
        """The raw decoding loop (benchmarks, tests): no events, no validation.

        ``schema`` None runs unconstrained. Holds the generation lock while iterating.
        """
        model = self.load()
        matcher = None
        if schema is not None:
            matcher = new_matcher(model.tokenizer(), build_grammar(schema))
        options = self._profile_options(options)
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

    def _profile_options(self, options: DecodeOptions) -> DecodeOptions:
        """``options`` with what the profile asks for: files that parse, and its rewinds where
        the caller left them to it (``generate`` and the raw ``decode`` run the same loop)."""
        if self.profile.parseable_files and not options.parseable_files:
            options = replace(options, parseable_files=True)
        if options.backtrack is None:
            options = replace(options, backtrack=self.profile.backtrack)
        return options

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
        options: DecodeOptions = FAST_PATH,
    ) -> Iterator[GenerationEvent]:
        """Stream events for ``request``; the last is ``Finished`` or a ``GenerationFailed``.

        Args:
            request: the chat messages, schema and token budget.
            cancel: set to stop within one token (also during prompt processing).
            sampling: overrides the profile's sampling settings.
            options: check-first / fast-forward switches (the defaults are the fast path).
        """
        cancel = cancel or threading.Event()
        options = self._profile_options(options)
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

    def _sampling(self, request: GenerationRequest) -> SamplingParams:
        """The profile's sampling, with a retry's temperature and seed when the request has
        them."""
        sampling = SamplingParams.from_profile(self.profile)
        if request.temperature is not None:
            sampling = replace(sampling, temperature=request.temperature)
        if request.seed is not None:
            sampling = replace(sampling, seed=request.seed)
        return sampling

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
            stats,
            max_files=request.max_files,
            issue_number=request.issue_number,
            shape=request.shape,
        )
        progress = _Progress(t0)
        self.last_tokens = progress.tokens
        if sampling is None:
            sampling = self._sampling(request)
        loop = decode(
            model,
            prompt,
            matcher=matcher,
            sampling=sampling,
            max_tokens=max_tokens,
            cancel=cancel,
            options=options,
        )
        try:
            for item in loop:
                yield from progress.events(item, stream)
                if stream.loop is not None:
                    break
        finally:
            loop.close()
        tail = progress.utf8.decode(b"", final=True)
        if tail:
            yield from stream.feed(tail)
        yield self._ending(stream, progress, stats)

    def _ending(
        self, stream: ProposalStream, progress: _Progress, stats: GenerationStats
    ) -> GenerationEvent:
        """The last event: a loop, a cancel, the loop's error, or the answer judged."""
        tokens, result = progress.tokens, progress.result
        decode_s = result.decode_seconds if result else time.perf_counter() - progress.t_first
        stats = replace(
            stats,
            cached_prompt_tokens=progress.cached,
            completion_tokens=len(tokens),
            ttft_s=progress.ttft,
            elapsed_s=time.perf_counter() - progress.t0,
            tokens_per_s=len(tokens) / decode_s if decode_s > 0 else 0.0,
            rewinds=progress.rewinds,
            rewound_tokens=progress.rewound_tokens,
        )
        if stream.loop is not None:
            return stream.finish("loop", stats)
        assert result is not None
        if result.reason == "cancelled":
            return Cancelled(
                message=f"cancelled after {len(tokens)} tokens",
                hint="regenerate when ready; the prompt prefix stays cached",
                partial=partial_parse(stream.text),
                raw=stream.text,
                stats=replace(stats, finish_reason="cancelled"),
            )
        if result.reason == "error":
            return BackendFailed(
                message=f"profile {self.name!r}: {result.error}",
                hint="this is a bug in agent-tui or llama.cpp; report it with the model name",
                partial=partial_parse(stream.text),
                raw=stream.text,
                stats=replace(stats, finish_reason="error"),
            )
        return stream.finish(result.reason, stats)


@dataclass
class _Progress:
    """What one generation learned from the loop's items: tokens, timings, the ending."""

    t0: float
    """When the request started (TTFT counts from here)."""
    tokens: list[int] = field(default_factory=list)
    utf8: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    ttft: float = 0.0
    cached: int = 0
    t_first: float = 0.0
    result: DecodeDone | None = None
    data: bytearray = field(default_factory=bytearray)
    """The answer's bytes so far (a rewind cuts them)."""
    emitted: int = 0
    """Characters of text sent in ``TokensGenerated`` events, net of rewinds."""
    rewinds: int = 0
    rewound_tokens: int = 0

    def events(self, item: DecodeItem, stream: ProposalStream) -> Iterator[GenerationEvent]:
        """The events of one item of the loop (``stream`` is fed the answer's text)."""
        if isinstance(item, PromptEvaluated):
            self.cached = item.cached_tokens
            yield PromptProcessed(item.prompt_tokens, item.cached_tokens, item.seconds)
            self.t_first = time.perf_counter()
        elif isinstance(item, TokensDecoded):
            now = time.perf_counter()
            tokens = self.tokens
            if not tokens:
                self.ttft = now - self.t0
            tokens.extend(item.tokens)
            self.data += item.data
            text = self.utf8.decode(item.data)
            self.emitted += len(text)
            elapsed = now - self.t_first
            yield TokensGenerated(
                text=text,
                completion_tokens=len(tokens),
                tokens_per_s=len(tokens) / elapsed if elapsed > 0 else 0.0,
                elapsed_s=now - self.t0,
            )
            yield from stream.feed(text)
        elif isinstance(item, Rewound):
            now = time.perf_counter()
            self.rewinds += 1
            self.rewound_tokens += item.removed
            del self.tokens[item.keep_tokens :], self.data[item.keep_bytes :]
            self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            kept = len(self.utf8.decode(bytes(self.data)))
            back, self.emitted = self.emitted - kept, kept
            elapsed = now - self.t_first
            yield TokensGenerated(
                text="",
                completion_tokens=len(self.tokens),
                tokens_per_s=len(self.tokens) / elapsed if elapsed > 0 else 0.0,
                elapsed_s=now - self.t0,
                rewind=back,
            )
            stream.rewind(back)
        else:
            self.result = item


__all__ = ["LlamaCppBackend"]
