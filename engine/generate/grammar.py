"""The proposal grammar: built from ``proposal_json_schema()`` and compiled with llguidance.

Why build it ourselves: llama-cpp-python's ``response_format`` silently falls back to "any
JSON object" when its schema converter fails, ignores ``{"type": "json_schema"}`` and drops
keywords it does not implement. Here every build error *and* every warning (an ignored or
unimplemented keyword, an unknown format, an unsupported regex feature) is a
``GrammarError``: a grammar that enforces less than the schema says is never used.

The grammar is compact JSON (no free whitespace between tokens), so a small model cannot run
away in indentation, and everything that can be bounded is bounded by the schema itself
(``engine.core.models``): the branch suffix and path lengths inside their regexes, the commit
message and title lengths, the number of files. ``content`` has no length bound on purpose.

Building llguidance's tokenizer from a llama.cpp vocabulary walks every token (about 1.4 s
for Gemma 3's 262,144 tokens), so it is built once per model file and cached here; so is the
compiled matcher of each schema, which each generation copies.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import llguidance

from engine.core.errors import AgentTuiError
from engine.core.models import DEFAULT_MAX_FILES, proposal_json_schema

#: JSON compiler options: compact separators, no free whitespace, no lenient mode (a keyword
#: the compiler does not implement is an error, not silently ignored).
COMPACT_JSON: dict[str, Any] = {
    "item_separator": ",",
    "key_separator": ":",
    "whitespace_flexible": False,
    "lenient": False,
}


class GrammarError(AgentTuiError):
    """The JSON schema could not be turned into a grammar that enforces all of it."""

    title = "Grammar could not be built"


_grammar_cache: dict[str, str] = {}
_tokenizer_cache: dict[str, llguidance.LLTokenizer] = {}
_matcher_cache: dict[tuple[str, str], llguidance.LLMatcher] = {}
_CACHE_LIMIT = 64
"""Grammars and compiled matchers kept (one per issue with the per-issue schema); the oldest
goes first. A tokenizer is never rebuilt per issue: only the small per-schema parts are."""
_lock = threading.Lock()
_tok_lock = threading.Lock()  # building a tokenizer takes seconds: not under ``_lock``


def _schema_key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def build_grammar(schema: dict[str, Any]) -> str:
    """Compile ``schema`` into an llguidance grammar, refusing errors and warnings.

    Args:
        schema: a JSON schema (e.g. ``proposal_json_schema()``).

    Returns:
        The llguidance grammar (a JSON string) for ``LLMatcher``.

    Raises:
        GrammarError: the schema is not valid JSON schema for llguidance, or a keyword would
            be ignored (the grammar would enforce less than the schema says).
    """
    key = _schema_key(schema)
    with _lock:
        cached = _grammar_cache.get(key)
    if cached is not None:
        return cached
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=COMPACT_JSON)  # type: ignore[arg-type]
    except ValueError as exc:
        raise GrammarError(
            f"the JSON schema is not a JSON object: {exc}",
            hint="this is a bug in the schema generation; report it",
        ) from exc
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error or messages:
        kind = "error" if is_error else "warning"
        raise GrammarError(
            f"llguidance reported a {kind} compiling the proposal schema: {'; '.join(messages)}",
            hint="every schema keyword must be enforced by the grammar; change the schema "
            "(engine/core/models.py) so that llguidance implements all of it",
        )
    with _lock:
        _grammar_cache[key] = grammar
        _trim(_grammar_cache)
    return grammar


def _trim(cache: dict[Any, Any]) -> None:
    """Drop the oldest entries of ``cache`` beyond ``_CACHE_LIMIT`` (caller holds ``_lock``)."""
    while len(cache) > _CACHE_LIMIT:
        del cache[next(iter(cache))]


def proposal_grammar(max_files: int = DEFAULT_MAX_FILES, issue_number: int | None = None) -> str:
    """The compiled grammar of ``proposal_json_schema(max_files, issue_number)``.

    Raises:
        GrammarError: see ``build_grammar``.
    """
    return build_grammar(proposal_json_schema(max_files, issue_number))


def tokenizer_for(model_key: str, vocab: Any, n_vocab: int | None = None) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for a llama.cpp vocabulary, built once per ``model_key``.

    Args:
        model_key: identifies the model file (e.g. its resolved path and size).
        vocab: the ``llama_vocab`` pointer of the loaded model.
        n_vocab: the logits width, when it exceeds the vocabulary (padding).

    Returns:
        The cached ``LLTokenizer``.
    """
    # The tokenizer keeps ``vocab`` (llguidance tokenizes through it): a tokenizer built from
    # a model that was freed since (a profile edited, the backend replaced) must never serve
    # another instance of the same file, or llguidance reads freed memory (a segfault).
    key = f"{model_key}@{ctypes_address(vocab)}"
    with _tok_lock:
        tok = _tokenizer_cache.get(key)
        if tok is None:
            tok = _lltokenizer_from_vocab(vocab, n_vocab)
            _tokenizer_cache[key] = tok
        return tok


def forget_tokenizer(model_key: str, vocab: Any) -> None:
    """Drop the tokenizer of a vocabulary about to be freed (and the matchers built on it)."""
    key = f"{model_key}@{ctypes_address(vocab)}"
    with _tok_lock:
        tok = _tokenizer_cache.pop(key, None)
    if tok is not None:
        with _lock:
            for mkey in [k for k in _matcher_cache if k[0] == str(id(tok))]:
                del _matcher_cache[mkey]


def ctypes_address(pointer: Any) -> int:
    """The address a ctypes pointer (or a plain int) holds."""
    import ctypes

    if isinstance(pointer, int):
        return pointer
    return int(ctypes.cast(pointer, ctypes.c_void_p).value or 0)


def _lltokenizer_from_vocab(vocab: Any, n_vocab: int | None) -> llguidance.LLTokenizer:
    """``llguidance.llamacpp.lltokenizer_from_vocab``, with llama.cpp's current attribute call.

    The upstream helper calls the deprecated ``llama_token_get_attr``, which issues one
    ``DeprecationWarning`` per token (262,144 of them for Gemma 3, slow wherever warnings are
    recorded); this is the same construction with ``llama_vocab_get_attr``.
    """
    import ctypes

    import llama_cpp

    ntok = llama_cpp.llama_vocab_n_tokens(vocab)
    eos_token = llama_cpp.llama_vocab_eos(vocab)
    buffer_len = 16 * 1024
    buffer = ctypes.create_string_buffer(buffer_len + 1)
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    user_defined = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    tokens: list[bytes] = []
    for token in range(ntok):
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, buffer_len, 0, True)
        if n < 0:
            raise GrammarError(f"llama.cpp could not write token {token} ({n})")
        tok = buffer.raw[:n]
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        # control tokens (and user-defined ones that look like them) are marked special
        if attr & control or (attr & user_defined and tok.startswith(b"<") and tok.endswith(b">")):
            tok = b"\xff" + tok
        tokens.append(tok)
    if n_vocab is not None:
        tokens.extend(b"" for _ in range(n_vocab - len(tokens)))
    fptr = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    return llguidance.LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=tokens, vocab_ptr=vocab, tokenize_fptr=fptr, eos_token=eos_token, slices=None
    )


def new_matcher(tokenizer: llguidance.LLTokenizer, grammar: str) -> llguidance.LLMatcher:
    """A fresh matcher of ``grammar`` at its start state.

    The grammar is compiled against ``tokenizer`` once; later calls copy that matcher.

    Raises:
        GrammarError: the grammar fails to compile against this tokenizer.
    """
    key = (str(id(tokenizer)), grammar)
    with _lock:
        template = _matcher_cache.get(key)
        if template is None:
            template = llguidance.LLMatcher(tokenizer, grammar, log_level=1)
            if template.is_error():
                raise GrammarError(
                    f"the grammar does not compile for this model: {template.get_error()}",
                    hint="this is a bug; report it with the model file name",
                )
            warnings = template.get_grammar_warnings()
            if warnings:
                raise GrammarError(
                    f"the grammar compiled with warnings: {'; '.join(warnings)}",
                    hint="every schema keyword must be enforced by the grammar",
                )
            _matcher_cache[key] = template
            _trim(_matcher_cache)
        return template.deep_copy()


def forced_prefix(max_files: int = DEFAULT_MAX_FILES) -> str:
    """The text every answer starts with (``{"branch_suffix":"``), for docs and tests."""
    props = proposal_json_schema(max_files)["properties"]
    first = next(iter(props))
    return '{"' + first + '":"'


__all__ = [
    "COMPACT_JSON",
    "GrammarError",
    "build_grammar",
    "forced_prefix",
    "forget_tokenizer",
    "new_matcher",
    "proposal_grammar",
    "tokenizer_for",
]
