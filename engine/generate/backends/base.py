"""The one small interface every model backend implements.

Why small: the TUI, the CLI and the batch runner only need "count tokens" and "generate as
events"; what differs between llama.cpp, Ollama and an OpenAI-compatible server is declared
by capability flags rather than by methods that raise ``NotImplementedError``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from engine.core.config import ProfileBase
from engine.core.events import GenerationEvent
from engine.core.models import DEFAULT_MAX_FILES, AnswerShape, proposal_json_schema


@dataclass
class GenerationRequest:
    """What to generate: chat messages and the schema the answer must match."""

    messages: list[dict[str, str]]
    """``[{"role": "system"|"user"|"assistant", "content": ...}]``."""
    max_files: int = DEFAULT_MAX_FILES
    max_tokens: int | None = None
    """Overrides the profile's ``max_tokens`` when set."""
    schema: dict[str, Any] = field(default_factory=dict)
    """Filled from ``max_files`` and ``issue_number`` when empty."""
    temperature: float | None = None
    """Overrides the profile's temperature (a retry after a loop or a truncation)."""
    seed: int | None = None
    """Overrides the profile's seed (a retry after a loop or a truncation)."""
    issue_number: int | None = None
    """The issue this generation answers: its schema (every backend's) requires
    ``Closes #N`` and conventional subjects, and the final validation checks the same."""
    shape: AnswerShape | None = None
    """The PR body's sections and the repository's directories (``AnswerShape``): the
    schema holds the answer to them, and the final validation checks the same."""

    def __post_init__(self) -> None:
        if not self.schema:
            self.schema = proposal_json_schema(self.max_files, self.issue_number, self.shape)


#: The profile type a backend serves (``LlamaCppProfile``, ``OllamaProfile``, ``OpenAIProfile``).
P = TypeVar("P", bound=ProfileBase)


class Backend(ABC, Generic[P]):
    """A model that turns chat messages into a stream of ``GenerationEvent``.

    Generic in its profile type, as simonw/llm gives each model its own Options class: a
    backend reads its settings as typed fields of the profile it serves, never by ``getattr``.
    """

    kind: ClassVar[str]
    """The ``backend`` value of the profiles it serves."""
    CAN_CANCEL: ClassVar[bool] = True
    """Cancellation stops generation within about one token."""
    CONCURRENT: ClassVar[bool] = False
    """Several generations may run at once (server backends)."""
    PREFIX_CACHE: ClassVar[bool] = False
    """A repeated prompt prefix is not evaluated again."""
    EXACT_TOKEN_COUNT: ClassVar[bool] = True
    """``count_tokens`` uses the model's own tokenizer."""

    def __init__(self, name: str, profile: P) -> None:
        self.name = name
        self.profile: P = profile

    @abstractmethod
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens the formatted prompt of ``messages`` takes (chat template included)."""

    @abstractmethod
    def count_text(self, text: str) -> int:
        """Tokens ``text`` alone takes (no chat template, no BOS): for budgeting context."""

    @abstractmethod
    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        """Stream events; the last is ``Finished`` or a ``GenerationFailed``.

        Expected failures are yielded as events, never raised, so a consumer has one place
        to handle them. ``cancel`` set at any time ends the stream with ``Cancelled``.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connections."""
