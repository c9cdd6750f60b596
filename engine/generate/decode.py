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

import json
import threading
import time
import tomllib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.core import pysource
from engine.generate.backtrack import Backtracker, Rewind
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
    parseable_files: bool = False
    """Forbid the token that would end a ``.py``, ``.json`` or ``.toml`` file's ``content``
    where it does not parse (``ContentGuard``), up to ``ContentGuard.MAX_REFUSALS`` times
    per file."""
    backtrack: int | None = None
    """Rewinds allowed per answer (``engine.generate.backtrack``): where the answer starts
    repeating itself or a Python line cannot parse, the loop takes the tokens back and picks
    another one there. 0 turns it off (the token-for-token parity with llama-server); None
    leaves it to the model profile (``backtrack``), and to 0 where no profile says."""


class PathGuard:
    """Tracks the ``path`` strings of a proposal as its bytes are written.

    The answer is compact JSON under the grammar, so a path value starts right after the
    bytes ``"path":"`` (a key the grammar forces; inside a string every ``"`` is escaped, so
    file content cannot fake it) and ends at the next ``"`` (the path pattern allows no
    escapes). ``closes_duplicate`` says whether a candidate token would end the current path
    equal to one already written, ignoring case (or would make one path the directory of
    another).
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
        """Whether writing ``piece`` next would close a path written before, close a path
        that is a directory of one written before, or put a ``/`` after a path written before
        (a file cannot also be a directory: ``app/x.py`` then ``app/x.py/test.py``)."""
        if self._current is not None and b"/" in piece and self.paths:
            current = self._current
            for i, byte in enumerate(piece):
                if byte == 0x22:
                    break
                if byte == 0x2F and self._norm(current + piece[:i]) in self.paths:
                    return True
        if b'"' not in piece:
            return False
        _tail, _current, done = self._advance(self._tail, self._current, piece)
        for path in done:
            norm = self._norm(path)
            if norm in self.paths or any(p.startswith(norm + "/") for p in self.paths):
                return True
        return False

    def feed(self, data: bytes) -> None:
        """Record bytes written to the answer."""
        self._tail, self._current, done = self._advance(self._tail, self._current, data)
        self.paths.update(self._norm(p) for p in done)


def parses(path: str, text: str) -> bool:
    """Whether ``text`` parses as the file ``path`` names (files of other kinds: True).

    The same parsers as the checks' ``python-syntax-error``/``data-syntax-error`` rules:
    Python through ``engine.core.pysource`` (depth-bounded, one parse at a time), JSON and
    TOML with the standard library.
    """
    low = path.lower()
    try:
        if pysource.is_python_path(low):
            pysource.parse(text, filename=path)
        elif low.endswith(".json"):
            json.loads(text)
        elif low.endswith(".toml"):
            tomllib.loads(text)
    except (SyntaxError, ValueError):  # JSONDecodeError and TOMLDecodeError are ValueErrors
        return False
    return True


class ContentGuard:
    """Refuses to end a file's ``content`` where it does not parse.

    A small model often closes a Python file mid-construct (``class Product(BaseModel):`` and
    nothing after it): the checks then report ``truncated-content`` or
    ``python-syntax-error`` and the proposal cannot be published. The grammar cannot say
    "valid Python"; the loop can refuse the token that would close the string there, so the
    model writes on. After ``MAX_REFUSALS`` refusals in one file the close is allowed (the
    checks report it): a model that cannot finish the file is not kept writing forever.

    The answer is compact JSON under the grammar: a file is ``{"path":"P","content":"C"}``
    in that order (the schema's), ``C`` starts right after the bytes ``"content":"`` (inside
    a string every ``"`` is escaped, so no text can fake the key) and ends at the first
    unescaped ``"``.
    """

    PATH_KEY = b'"path":"'
    CONTENT_KEY = b'"content":"'
    MAX_REFUSALS = 24

    def __init__(self) -> None:
        self._tail = b""
        self._path: bytes | None = None  # inside a path string
        self._last_path = ""
        self._content: bytearray | None = None  # inside a content string (raw JSON bytes)
        self._escaped = False
        self._refused = 0
        self.blocked = 0
        """Tokens refused because they would have ended a file that does not parse."""

    def _closing_at(self, piece: bytes) -> int:
        """The index in ``piece`` of the quote that would end the current content, or -1."""
        if self._content is None:
            return -1
        escaped = self._escaped
        for i, byte in enumerate(piece):
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                return i
        return -1

    def closes_unparseable(self, piece: bytes) -> bool:
        """Whether writing ``piece`` next would end the current file where it does not parse."""
        if self._content is None or b'"' not in piece or self._refused >= self.MAX_REFUSALS:
            return False
        at = self._closing_at(piece)
        if at < 0:
            return False
        raw = bytes(self._content) + piece[:at]
        try:
            text = json.loads(b'"' + raw + b'"')
        except ValueError:
            return False  # not ours to judge: the grammar keeps the string valid
        return not parses(self._last_path, text)

    def count_refusal(self) -> None:
        """A token was refused by ``closes_unparseable``: one fewer left for this file."""
        self._refused += 1
        self.blocked += 1

    def feed(self, data: bytes) -> None:
        """Record bytes written to the answer."""
        for byte in data:
            if self._content is not None:
                if self._escaped:
                    self._escaped = False
                elif byte == 0x5C:
                    self._escaped = True
                elif byte == 0x22:
                    self._content, self._tail, self._refused = None, b'"', 0
                    continue
                self._content.append(byte)
            elif self._path is not None:
                if byte == 0x22:
                    self._last_path = self._path.decode("utf-8", errors="replace")
                    self._path, self._tail = None, b'"'
                else:
                    self._path += bytes((byte,))
            else:
                self._tail = (self._tail + bytes((byte,)))[-len(self.CONTENT_KEY) :]
                if self._tail.endswith(self.PATH_KEY):
                    self._path, self._tail = b"", b""
                elif self._tail == self.CONTENT_KEY:
                    self._content, self._tail = bytearray(), b""


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
class Rewound:
    """The loop took tokens back: the answer is now its first ``keep_tokens`` tokens
    (``keep_bytes`` bytes), and the token that followed them is forbidden there."""

    keep_tokens: int
    keep_bytes: int
    reason: str
    removed: int
    """Tokens taken back (decoded, then removed from the answer)."""


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


DecodeItem = PromptEvaluated | TokensDecoded | Rewound | DecodeDone


class _Decoding:
    """One run of the loop: the model, grammar and sampler, and the counters ``done`` reports.

    Why a class: the steps of the loop (prompt, the forced lead, choosing a token, forcing
    the text after it) share these counters and the sampler; as methods they read in order
    and stay small, and the token choices are exactly those of one long function.
    """

    def __init__(
        self,
        model: LoadedModel,
        matcher: Any | None,
        sampling: SamplingParams,
        max_tokens: int,
        options: DecodeOptions,
        t0: float,
    ) -> None:
        self.model = model
        self.llm = model.llm
        self.n_ctx = model.n_ctx
        self.matcher = matcher
        self.max_tokens = max_tokens
        self.options = options
        self.t0 = t0
        self.sampled = self.forced = self.rejections = self.masks = self.completion = 0
        self.sampler = TokenSampler(sampling, model.n_vocab, model.vocab)
        self.guard = PathGuard() if matcher is not None and options.unique_paths else None
        self.content_guard = (
            ContentGuard() if matcher is not None and options.parseable_files else None
        )
        self.backtracker = (
            Backtracker(limit=options.backtrack)
            if matcher is not None and options.backtrack
            else None
        )
        self.prompt_tokens: list[int] = []
        self.prompt_seconds = 0.0
        self.t_decode = t0
        self.mask_buf = np.zeros((model.n_vocab + 31) // 32, dtype=np.int32)

    def done(self, reason: str, error: str = "") -> DecodeDone:
        now = time.perf_counter()
        return DecodeDone(
            reason=reason,
            completion_tokens=self.completion,
            sampled=self.sampled,
            forced=self.forced,
            rejections=self.rejections,
            masks=self.masks,
            prompt_seconds=self.prompt_seconds,
            decode_seconds=now - self.t_decode if self.completion else 0.0,
            error=error,
            path_blocks=self.guard.blocked if self.guard is not None else 0,
        )

    def prompt(
        self, prompt: list[int], cancel: threading.Event, penalty_last_n: int
    ) -> Generator[DecodeItem, None, bool]:
        """Evaluate the prompt (its cached prefix kept); False when the run ended."""
        if cancel.is_set():
            yield self.done("cancelled")
            return False
        model = self.model
        self.prompt_tokens = prompt
        cached = model.cached_prefix(prompt)
        try:
            finished = model.eval_prompt(prompt[cached:], cancel)
        except RuntimeError as exc:
            yield self.done("error", f"llama.cpp failed evaluating the prompt: {exc}")
            return False
        self.prompt_seconds = time.perf_counter() - self.t0
        if not finished:
            yield self.done("cancelled")
            return False
        yield PromptEvaluated(len(prompt), cached, self.prompt_seconds)
        for tok in prompt[-penalty_last_n:]:
            self.sampler.accept_prompt(tok)
        self.t_decode = time.perf_counter()
        return True

    def refused(self, tok: int, *, count: bool = True) -> bool:
        """Whether the loop refuses ``tok``: it would close a duplicate path, or end a file
        that does not parse (``count``: record the refusal; a first look does not)."""
        backtracker = self.backtracker
        if backtracker is not None and tok in backtracker.banned():
            return True
        piece = self.model.piece(tok)
        if self.guard is not None and self.guard.closes_duplicate(piece):
            if count:
                self.guard.blocked += 1
            return True
        content = self.content_guard
        if content is not None and content.closes_unparseable(piece):
            if count:
                content.count_refusal()
            return True
        return False

    def pick(self, logits: np.ndarray, allowed: np.ndarray) -> int:
        """Sample among ``allowed``, never a token the loop refuses (-1: none left)."""
        while True:
            tok = self.sampler.sample(logits, allowed)
            if not self.refused(tok):
                return tok
            allowed[tok] = False
            if not allowed.any():
                return -1

    def allowed_tokens(self) -> np.ndarray:
        """The grammar's full mask of the vocabulary, as a bool array."""
        assert self.matcher is not None
        mask_buf = self.mask_buf
        self.matcher.unsafe_compute_mask_ptr(mask_buf.ctypes.data, mask_buf.nbytes)
        bits = np.unpackbits(mask_buf.view(np.uint8), bitorder="little")
        return bits[: self.model.n_vocab].view(np.bool_)

    def force(self, tokens: list[int]) -> str:
        """Consume the grammar's forced ``tokens``; the error, or '' when accepted."""
        assert self.matcher is not None
        if not self.matcher.consume_tokens(tokens):
            return f"fast-forward refused: {self.matcher.get_error()}"
        for f in tokens:
            self.sampler.accept(f)
        self.forced += len(tokens)
        return ""

    def lead(self) -> Generator[DecodeItem, None, bool]:
        """The text every answer starts with (``{"branch_suffix":"``) in one batch; False
        when the run ended."""
        assert self.matcher is not None
        room = min(self.max_tokens, self.n_ctx - int(self.llm.n_tokens))
        lead = list(self.matcher.compute_ff_tokens())[:room]
        if not lead:
            return True
        error = self.force(lead)
        if error:
            yield self.done("error", error)
            return False
        self.completion += len(lead)
        lead_data = b"".join(map(self.model.piece, lead))
        if self.guard is not None:
            self.guard.feed(lead_data)
        if self.content_guard is not None:
            self.content_guard.feed(lead_data)
        if self.backtracker is not None:
            self.backtracker.feed(lead, [self.model.piece(t) for t in lead], first_sampled=False)
        yield TokensDecoded(tuple(lead), lead_data, len(lead), False)
        try:
            self.llm.eval(lead)
        except RuntimeError as exc:
            yield self.done("error", f"llama.cpp failed decoding: {exc}")
            return False
        return True

    def choose(self, stop_at_eog: bool) -> tuple[int, bool] | DecodeDone:
        """The next token and whether the grammar rejected the first pick, or the ending."""
        model = self.model
        logits = model.logits()
        matcher = self.matcher
        if matcher is None:
            tok = self.sampler.sample(logits)
            if stop_at_eog and model.is_eog(tok):
                return self.done("stop")
            return tok, False
        rejected = False
        # Where the grammar forces bytes, llguidance's mask allows only their canonical
        # tokenization while validate_tokens() accepts any token spelling them: mask
        # there (cheap, few tokens allowed) so both paths pick the very same token.
        if self.options.check_first and not matcher.compute_ff_bytes():
            tok = self.sampler.sample(logits)
            if matcher.validate_tokens([tok]) != 1 or self.refused(tok, count=False):
                rejected = True
                self.rejections += 1
                self.masks += 1
                tok = self.pick(logits, self.allowed_tokens())
        else:
            self.masks += 1
            tok = self.pick(logits, self.allowed_tokens())
        if tok < 0:
            return self.done("error", "no token left that the grammar and the loop allow")
        if not matcher.consume_token(tok):
            return self.done("error", f"the grammar refused token {tok}: {matcher.get_error()}")
        return tok, rejected

    def steps(self, cancel: threading.Event, stop_at_eog: bool) -> Iterator[DecodeItem]:
        """Sample, check and fast-forward until the answer or the budget ends."""
        llm, matcher, model = self.llm, self.matcher, self.model
        while True:
            if cancel.is_set():
                yield self.done("cancelled")
                return
            if self.completion >= self.max_tokens:
                yield self.done("length")
                return
            if int(llm.n_tokens) >= self.n_ctx:
                yield self.done("context")
                return
            chosen = self.choose(stop_at_eog)
            if isinstance(chosen, DecodeDone):
                yield chosen
                return
            tok, rejected = chosen
            self.sampler.accept(tok)
            self.sampled += 1
            step = [tok]
            if matcher is not None and self.options.fast_forward and not matcher.is_stopped():
                room = min(
                    self.max_tokens - self.completion - 1, self.n_ctx - int(llm.n_tokens) - 1
                )
                ff = list(matcher.compute_ff_tokens())[: max(room, 0)]
                if ff:
                    error = self.force(ff)
                    if error:
                        yield self.done("error", error)
                        return
                    step.extend(ff)
            self.completion += len(step)
            stopped = matcher is not None and matcher.is_stopped()
            data = b"".join(model.piece(t) for t in step if not (stopped and model.is_eog(t)))
            if self.guard is not None:
                self.guard.feed(data)
            if self.content_guard is not None:
                self.content_guard.feed(data)
            yield TokensDecoded(tuple(step), data, len(step) - 1, rejected)
            if self.backtracker is not None:
                self.backtracker.feed(step, [model.piece(t) for t in step])
                rewind = self.backtracker.check()
                if rewind is not None:
                    removed = self.completion - rewind.keep
                    error = self.rewind(rewind)
                    if error:
                        yield self.done("error", error)
                        return
                    yield Rewound(rewind.keep, len(self.backtracker.data), rewind.reason, removed)
                    continue
            if stopped:
                yield self.done("stop")
                return
            try:
                llm.eval(step)
            except RuntimeError as exc:
                yield self.done("error", f"llama.cpp failed decoding: {exc}")
                return

    def rewind(self, rewind: Rewind) -> str:
        """Take the answer back to its first ``rewind.keep`` tokens: the grammar, the model's
        KV cache (exact: SWA models keep their whole cache, ``swa_full``), the guards and the
        sampler's history. Returns an error, or '' when done."""
        backtracker, matcher, llm = self.backtracker, self.matcher, self.llm
        assert backtracker is not None and matcher is not None
        drop = self.completion - rewind.keep
        if drop > 0 and not matcher.rollback(drop):
            return f"the grammar could not take back {drop} tokens: {matcher.get_error()}"
        self.completion = rewind.keep
        base = len(self.prompt_tokens)
        kept = backtracker.tokens
        evaluated = int(llm.n_tokens) - base
        try:
            if rewind.keep <= evaluated:
                # re-evaluate the last kept token alone: its logits choose the next one
                last = kept[rewind.keep - 1] if rewind.keep else self.prompt_tokens[-1]
                pos = base + rewind.keep - 1
                if not llm._ctx.kv_cache_seq_rm(-1, pos, -1):
                    return "llama.cpp could not take tokens out of its cache"
                llm.n_tokens = pos
                llm.eval([last])
            else:
                llm.eval(kept[evaluated : rewind.keep])
        except RuntimeError as exc:
            return f"llama.cpp failed decoding: {exc}"
        data = bytes(backtracker.data)
        if self.guard is not None:
            blocked = self.guard.blocked
            self.guard = PathGuard()
            self.guard.blocked = blocked
            self.guard.feed(data)
        if self.content_guard is not None:
            blocked = self.content_guard.blocked
            self.content_guard = ContentGuard()
            self.content_guard.blocked = blocked
            self.content_guard.feed(data)
        self.sampler.restart(self.prompt_tokens, kept)
        return ""


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
    t0 = time.perf_counter()
    if sampling.dry and sampling.dry_penalty_last_n < 0:  # -1: the whole context
        sampling = replace(sampling, dry_penalty_last_n=model.n_ctx)
    run = _Decoding(model, matcher, sampling, max_tokens, options, t0)
    try:
        if not (yield from run.prompt(prompt, cancel, sampling.penalty_last_n)):
            return
        if matcher is not None and options.fast_forward:
            if not (yield from run.lead()):
                return
        yield from run.steps(cancel, stop_at_eog)
    finally:
        run.sampler.close()


__all__ = [
    "DecodeDone",
    "DecodeItem",
    "DecodeOptions",
    "PathGuard",
    "PromptEvaluated",
    "Rewound",
    "TokensDecoded",
    "decode",
]
