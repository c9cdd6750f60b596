"""Find the models this machine already runs or has: local model servers and GGUF files.

Why: the embedded model makes the flow work out of the box, but real work needs a real
model, and a user who already runs Ollama, llama-server, LM Studio, vLLM or SGLang should
not have to write a profile by hand. ``discover`` asks the usual loopback ports (never
another host: nothing leaves the machine) with short timeouts, all at once, and looks for
GGUF files in the usual folders; each find is a ready profile (``Discovered.profile``) the
TUI offers for this session and saves to the user config only when asked.

A server that answers slowly, with garbage, or not at all is simply not listed.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.config import LlamaCppProfile, OllamaProfile, OpenAIProfile
from engine.issues.forge.github_token import is_loopback

#: (kind, base URL) probed by default; ``kind`` says which API to ask
DEFAULT_SERVERS: tuple[tuple[str, str], ...] = (
    ("ollama", "http://127.0.0.1:11434"),
    ("llama-server", "http://127.0.0.1:8080"),
    ("lm-studio", "http://127.0.0.1:1234"),
    ("vllm", "http://127.0.0.1:8000"),
    ("sglang", "http://127.0.0.1:30000"),
)
KIND_NAMES = {
    "ollama": "Ollama",
    "llama-server": "llama-server",
    "lm-studio": "LM Studio",
    "vllm": "vLLM",
    "sglang": "SGLang",
    "gguf": "GGUF file",
}
TIMEOUT_S = 0.5
MAX_ANSWER = 1 << 20
"""Read at most this much of an answer (a discovery never needs more)."""
MAX_GGUF = 50


@dataclass(frozen=True)
class Discovered:
    """One model found on this machine, as a ready profile."""

    name: str
    """A profile name for it (``ollama-qwen2.5-coder-7b``)."""
    kind: str
    """``ollama``, ``llama-server``, ``lm-studio``, ``vllm``, ``sglang`` or ``gguf``."""
    model: str
    """The served model's tag or id, or the GGUF file's path."""
    where: str
    """The server's URL, or the GGUF's folder."""
    n_ctx: int | None = None
    """The context length the server reports (None: it does not say)."""

    @property
    def source(self) -> str:
        """Where it was found, in words (``Ollama``, ``LM Studio``...)."""
        return KIND_NAMES.get(self.kind, self.kind)

    def profile(self) -> LlamaCppProfile | OllamaProfile | OpenAIProfile:
        """The model profile that uses it (context from the server, capped to 32k)."""
        extra: dict[str, Any] = {"description": f"found by discovery: {self.source}"}
        if self.n_ctx:
            extra["n_ctx"] = max(512, min(self.n_ctx, 32768))
        if self.kind == "ollama":
            return OllamaProfile(backend="ollama", model=self.model, host=self.where, **extra)
        if self.kind == "gguf":
            return LlamaCppProfile(backend="llama_cpp", model_path=self.model, **extra)
        return OpenAIProfile(
            backend="openai", base_url=self.where.rstrip("/") + "/v1", model=self.model, **extra
        )


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (discovery never asks another host)."""
    return is_loopback(urllib.parse.urlsplit(url).hostname or "")


def _get(url: str, timeout: float) -> Any:
    """The JSON answer of ``GET url`` (None: no answer, an error, or not JSON)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        # a proxy from the environment must not see loopback probes
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=timeout) as answer:
            if answer.status != 200:
                return None
            data = answer.read(MAX_ANSWER + 1)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if len(data) > MAX_ANSWER:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")[:48] or "model"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def probe(kind: str, base: str, timeout: float = TIMEOUT_S) -> list[Discovered]:
    """The models one server offers (empty: not running, not loopback, or not understood).

    Args:
        kind: which API to ask (a key of ``KIND_NAMES`` but ``gguf``).
        base: the server's base URL (no ``/v1``).
        timeout: seconds for each request.
    """
    base = base.rstrip("/")
    if not is_loopback_url(base):
        return []
    found: list[Discovered] = []
    if kind == "ollama":
        data = _get(f"{base}/api/tags", timeout)
        models = data.get("models") if isinstance(data, dict) else None
        for entry in models if isinstance(models, list) else []:
            tag = entry.get("name") or entry.get("model") if isinstance(entry, dict) else None
            if isinstance(tag, str) and tag:
                found.append(Discovered(f"ollama-{_slug(tag)}", kind, tag, base))
        return found
    if kind == "llama-server":
        props = _get(f"{base}/props", timeout)
        if not isinstance(props, dict):
            return []
        settings = props.get("default_generation_settings")
        n_ctx = _int(settings.get("n_ctx")) if isinstance(settings, dict) else None
        path = props.get("model_path")
        model = Path(path).name if isinstance(path, str) and path else ""
        served = _get(f"{base}/v1/models", timeout)
        data = served.get("data") if isinstance(served, dict) else None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            model = str(data[0].get("id") or model)
        if not model:
            return []
        return [Discovered(f"llama-server-{_slug(Path(model).stem)}", kind, model, base, n_ctx)]
    served = _get(f"{base}/v1/models", timeout)
    data = served.get("data") if isinstance(served, dict) else None
    for entry in data if isinstance(data, list) else []:
        model_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(model_id, str) and model_id:
            n_ctx = _int(entry.get("max_model_len")) or _int(entry.get("context_length"))
            found.append(Discovered(f"{kind}-{_slug(model_id)}", kind, model_id, base, n_ctx))
    return found


def default_servers() -> list[tuple[str, str]]:
    """The usual ports, with ``$OLLAMA_HOST`` in place of Ollama's when it is set."""
    servers = list(DEFAULT_SERVERS)
    host = os.environ.get("OLLAMA_HOST", "").strip()
    if host:
        if "://" not in host:
            host = f"http://{host}"
        servers[0] = ("ollama", host)
    return servers


def gguf_folders() -> list[Path]:
    """Where GGUF files usually are: the Hugging Face hub cache, LM Studio's models folder."""
    home = Path.home()
    hf_home = Path(os.environ.get("HF_HOME", home / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub"))
    return [hub, home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def find_gguf(folders: Iterable[Path] | None = None, limit: int = MAX_GGUF) -> list[Discovered]:
    """GGUF files under ``folders`` (default: ``gguf_folders``), at most ``limit``, split
    files and projector files (``mmproj``) left out."""
    found: list[Discovered] = []
    seen: set[str] = set()
    for folder in folders if folders is not None else gguf_folders():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.gguf")):
            name = path.name.lower()
            if "mmproj" in name or re.search(r"-0000[2-9]-of-", name):
                continue
            stem = _slug(path.stem)
            if stem in seen or not path.exists():
                continue
            seen.add(stem)
            found.append(Discovered(f"gguf-{stem}", "gguf", str(path), str(path.parent)))
            if len(found) >= limit:
                return found
    return found


def discover(
    servers: Sequence[tuple[str, str]] | None = None,
    folders: Iterable[Path] | None = None,
    *,
    timeout: float = TIMEOUT_S,
) -> list[Discovered]:
    """Every model found: the servers (asked at once, loopback only), then GGUF files.

    Args:
        servers: (kind, base URL) pairs (default: ``default_servers()``).
        folders: where to look for GGUF files (default: ``gguf_folders()``; ``[]``: none).
        timeout: seconds for each request.

    Returns:
        One entry per model, with unique names.
    """
    pairs = list(servers) if servers is not None else default_servers()
    with ThreadPoolExecutor(max_workers=max(1, len(pairs))) as pool:
        results = list(pool.map(lambda pair: probe(pair[0], pair[1], timeout), pairs))
    found = [d for result in results for d in result] + find_gguf(folders)
    unique: dict[str, Discovered] = {}
    for d in found:
        name, n = d.name, 2
        while name in unique:
            name, n = f"{d.name}-{n}", n + 1
        unique[name] = Discovered(name, d.kind, d.model, d.where, d.n_ctx)
    return list(unique.values())


def profile_toml(name: str, profile: LlamaCppProfile | OllamaProfile | OpenAIProfile) -> str:
    """A ``[models.NAME]`` table for the config file (only the fields that differ from the
    defaults)."""
    data = profile.model_dump(exclude_defaults=True)
    data["backend"] = profile.backend
    lines = [f"[models.{json.dumps(name)}]"]
    for key, value in data.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def save_profile(
    name: str, profile: LlamaCppProfile | OllamaProfile | OpenAIProfile, path: Path | None = None
) -> Path:
    """Append the profile to the user config (``path``, default: the user config file).

    Returns:
        The file written.

    Raises:
        ConfigError: the file already defines a profile of that name.
    """
    from engine.core.config import user_config_path
    from engine.core.errors import ConfigError

    target = path or user_config_path()
    text = target.read_text(encoding="utf-8") if target.exists() else ""
    if re.search(rf'^\[models\.("?){re.escape(name)}\1\]', text, re.MULTILINE):
        raise ConfigError(
            f"{target} already has a profile named {name!r}",
            hint="edit it there, or remove it first",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as fh:
        fh.write(("\n" if text and not text.endswith("\n\n") else "") + profile_toml(name, profile))
    return target


__all__ = [
    "DEFAULT_SERVERS",
    "Discovered",
    "default_servers",
    "discover",
    "find_gguf",
    "gguf_folders",
    "is_loopback",
    "probe",
    "profile_toml",
    "save_profile",
]
