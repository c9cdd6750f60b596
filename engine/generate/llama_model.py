"""The one way a llama.cpp model is loaded, and the loaded model the decoding loop drives.

Why one way: on some CPUs llama.cpp's AMX matrix multiply crashes the process on Q4_K models
(ggml-org/llama.cpp#20824). ``new_llama`` (and ``cpu_safeguard`` for code that lets a library
load the model itself) decide from the build whether llama.cpp may repack weights into its
extra CPU buffers, so every computing load in the project is guarded the same way.
``LoadedModel`` wraps a loaded ``Llama`` with what the decoding loop needs: token pieces,
logits, the prefix cache, chunked and cancellable prompt evaluation, llguidance's tokenizer.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import BackendError
from engine.generate.grammar import forget_tokenizer, tokenizer_for

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


__all__ = ["LoadedModel", "cpu_extra_buffers", "cpu_safeguard", "new_llama", "system_info"]
