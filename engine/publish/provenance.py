"""Provenance: what produced a proposal (model, prompt, seed), written as commit trailers.

Why its own module: the plan composes the commit message with these trailers, the history
records them per generation, and the session asks for them before a plan exists; none of them
needs the plan's machinery. The model's identity is the GGUF's hash (remembered per size and
mtime in the store) or the served model's tag.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engine.core.config import AppConfig, LlamaCppProfile, OllamaProfile, OpenAIProfile
from engine.core.errors import AgentTuiError, PublishError
from engine.generate.modelfile import resolve_gguf
from engine.publish.store import Store

TRAILER_PREFIX = "Agent-Tui"


@dataclass(frozen=True)
class Provenance:
    """What produced a proposal, recorded as commit trailers so a change can be reproduced."""

    model_profile: str = ""
    model_ref: str = ""
    """The model file's ``sha256:...`` or the served model's tag."""
    prompt_profile: str = ""
    prompt_hash: str = ""
    seed: int | None = None

    def trailers(self) -> list[tuple[str, str]]:
        """``(key, value)`` commit trailers for the known fields."""
        pairs = [
            ("Model-Profile", self.model_profile),
            ("Model", self.model_ref),
            ("Prompt-Profile", self.prompt_profile),
            ("Prompt-Hash", self.prompt_hash),
            ("Seed", "" if self.seed is None else str(self.seed)),
        ]
        return [(f"{TRAILER_PREFIX}-{k}", _one_line(v)) for k, v in pairs if v]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def file_sha256(path: Path, store: Store | None = None) -> str:
    """``sha256:<hex>`` of a (model) file, remembered per size and mtime in ``store``."""
    if store is not None:
        cached = store.cached_hash(path)
        if cached:
            return cached
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = f"sha256:{digest.hexdigest()}"
    if store is not None:
        store.remember_hash(path, value)
    return value


def model_ref_for(
    profile: LlamaCppProfile | OllamaProfile | OpenAIProfile, store: Store | None = None
) -> str:
    """The model's reproducible identity: the GGUF's hash, or the served model's tag.

    Args:
        profile: the model profile.
        store: remembers file hashes (a GGUF is hashed once per size/mtime).

    Returns:
        ``sha256:<hex>`` (llama.cpp), ``ollama:<tag>`` or ``openai:<model>@<base_url>``;
        empty when the GGUF cannot be found.
    """
    if isinstance(profile, LlamaCppProfile):
        try:
            return file_sha256(resolve_gguf(profile), store)
        except (AgentTuiError, OSError):
            return ""
    if isinstance(profile, OllamaProfile):
        return f"ollama:{profile.model}"
    return f"openai:{profile.model}@{profile.base_url}"


def provenance_from_history(
    store: Store, generation_id: int, config: AppConfig | None = None
) -> Provenance:
    """The provenance of a stored generation (the model file hashed when it is a GGUF).

    Raises:
        PublishError: no generation has that id.
    """
    record = store.generation(generation_id)
    if record is None:
        raise PublishError(
            f"no generation #{generation_id} in the history",
            hint="`agent-tui history` lists them",
        )
    model_ref = record.model_ref
    if config is not None and record.model_profile in config.models:
        model_ref = model_ref_for(config.models[record.model_profile], store) or model_ref
    return Provenance(
        record.model_profile, model_ref, record.prompt_profile, record.prompt_hash, record.seed
    )


def commit_message(message: str, provenance: Provenance) -> str:
    """The proposal's commit message followed by the provenance trailers."""
    text = message.strip() + "\n"
    trailers = provenance.trailers()
    if trailers:
        text += "\n" + "".join(f"{k}: {v}\n" for k, v in trailers)
    return text


__all__ = [
    "TRAILER_PREFIX",
    "Provenance",
    "commit_message",
    "file_sha256",
    "model_ref_for",
    "provenance_from_history",
]
