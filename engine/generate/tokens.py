"""Token estimation for models whose tokenizer is not at hand (the server backends).

Why its own module: counting is a separate concern from the HTTP plumbing. The exact
tokenizer of a served model is not available client-side (Ollama has no tokenize endpoint,
OpenAI-compatible servers differ), so prompts are budgeted with a documented ratio of
characters per token, calibrated by the counts each server reports, and a prompt the server
evaluated as markedly shorter than estimated is reported as cut.
"""

from __future__ import annotations

import math
import threading

#: Default characters per token of the documented estimate (BPE vocabularies of current
#: code models average 3.1-3.9 characters per token on English prose, Markdown and code;
#: measured on the Gemma 3 tokenizer, see docs/benchmarks.md).
DEFAULT_CHARS_PER_TOKEN = 3.5
#: Tokens a chat template adds around each message (role markers, turn delimiters).
MESSAGE_OVERHEAD_TOKENS = 4
#: Tokens a chat template adds once (BOS, the assistant turn's header).
PROMPT_OVERHEAD_TOKENS = 3


def estimate_text_tokens(text: str, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    """A documented estimate of the tokens of ``text`` when the tokenizer is not at hand."""
    return math.ceil(len(text) / chars_per_token) if text else 0


def estimate_chat_tokens(
    messages: list[dict[str, str]], chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
) -> int:
    """A documented estimate of the tokens of a chat prompt, template overhead included."""
    body = sum(estimate_text_tokens(m.get("content", ""), chars_per_token) for m in messages)
    return body + MESSAGE_OVERHEAD_TOKENS * len(messages) + PROMPT_OVERHEAD_TOKENS


def chat_chars(messages: list[dict[str, str]]) -> int:
    """Characters of message content (what the estimate scales with)."""
    return sum(len(m.get("content", "")) for m in messages)


class TokenCalibration:
    """Learns a server model's characters per token from the counts the server reports.

    The exact tokenizer of a served model is not available client-side, so the first estimate
    uses ``DEFAULT_CHARS_PER_TOKEN``; each answer that reports the prompt's token count refines
    it, and the estimate becomes tight enough for a strict truncation check.
    """

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token
        self.samples = 0
        self._lock = threading.Lock()

    def observe(self, messages: list[dict[str, str]], server_tokens: int) -> None:
        """Record that the server counted ``server_tokens`` for ``messages``."""
        overhead = MESSAGE_OVERHEAD_TOKENS * len(messages) + PROMPT_OVERHEAD_TOKENS
        body_tokens = server_tokens - overhead
        chars = chat_chars(messages)
        if body_tokens <= 0 or chars < 200:
            return  # too small to say anything about the tokenizer
        ratio = chars / body_tokens
        with self._lock:
            weight = 1.0 / (self.samples + 1) if self.samples < 4 else 0.2
            base = self.chars_per_token if self.samples else ratio
            self.chars_per_token = base + weight * (ratio - base)
            self.samples += 1

    @property
    def tolerance(self) -> float:
        """The fraction an evaluated count may fall below the estimate before it is a cut.

        Wide before the first server count (the default ratio may be off by a third for an
        unusual tokenizer), narrow once calibrated.
        """
        return 0.15 if self.samples else 0.35

    def text_tokens(self, text: str) -> int:
        return estimate_text_tokens(text, self.chars_per_token)

    def chat_tokens(self, messages: list[dict[str, str]]) -> int:
        return estimate_chat_tokens(messages, self.chars_per_token)


def prompt_was_cut(expected: int, evaluated: int | None, tolerance: float) -> bool:
    """Whether a server that evaluated ``evaluated`` prompt tokens dropped part of the prompt.

    ``None`` or ``0`` (an old Ollama omits the count on a cache hit) cannot be checked and is
    not reported as a cut.
    """
    if not evaluated:
        return False
    slack = max(8, int(expected * tolerance))
    return evaluated < expected - slack
