"""Configuration: ``models.toml`` and user/repo config files -> typed, validated settings.

Files are layered, nearest wins:

1. the ``models.toml`` shipped with the app (the embedded default model and examples);
2. the user's config: the file named by ``$AGENT_TUI_CONFIG`` if set, else
   ``<platformdirs user config dir>/agent-tui/config.toml``;
3. the repository's ``.agent-tui.toml`` (at the top of the working tree).

Every file has the same shape and is validated on its own, so an error names the file it
came from. A model profile defined in a nearer file replaces the one of the same name
entirely (a half-merged profile would be surprising); the scalar settings and the
``[github]``/``[publish]``/``[generation]``/``[tui]`` tables merge key by key.

The repository's file is someone else's input until the user trusts it (``agent-tui trust``,
see :mod:`engine.core.trust`): its settings that send data or credentials somewhere or run
commands (:func:`sensitive_settings`) are ignored, and named in ``AppConfig.untrusted``, while
the harmless ones (prompt profile, keymap, limits, issue source) apply at once.

Unknown keys are errors, never ignored: a typo such as ``n_gpu_layer`` would otherwise
silently run a 7B model on the CPU. Secrets never live here: a key that looks like one is
refused with a message saying where it belongs (an environment variable).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from engine.core import trust
from engine.core.configfiles import (  # noqa: F401 - part of this module's API
    CONFIG_ENV_VAR,
    REPO_CONFIG_NAME,
    find_repo_config,
    user_config_path,
)
from engine.core.errors import ConfigError, UnknownProfileError
from engine.core.models import DEFAULT_MAX_FILES, MAX_FILES_LIMIT
from engine.core.resources import bundled_models_toml

_SECRET_WORDS = ("token", "api_key", "apikey", "password", "secret", "passwd")
#: variables that hold credentials for another service: never a model server's API key
RESERVED_KEY_ENVS = frozenset(
    {"GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"}
)


#: an environment variable's name; a key pasted into ``api_key_env`` has '-' or is mixed-case
_ENV_NAME_RE = re.compile(r"^(?:[A-Z_][A-Z0-9_]{0,63}|[a-z_][a-z0-9_]{0,63})$")


def _no_credentials_in_url(url: str, key: str) -> None:
    """Refuse ``user:password@`` in a server URL (without echoing it)."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError:
        raise ValueError(f"{key} is not a URL") from None
    if has_credentials:
        raise ValueError(
            f"{key} carries credentials (user:password@); secrets never live in config files: "
            "put the NAME of an environment variable in 'api_key_env' (the URL is not shown)"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ProfileBase(_Strict):
    """Settings every model profile has, whatever its backend."""

    description: str = ""
    """One line shown in ``agent-tui models`` and the Models screen."""
    n_ctx: int = Field(8192, ge=512, le=1_048_576)
    """Context window in tokens. Always sent explicitly (Ollama's default is small)."""
    max_tokens: int = Field(3072, ge=16)
    """Output token budget reserved for the answer."""
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    """0 means greedy decoding (reproducible)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    """0 disables top-k."""
    seed: int = Field(0, ge=0)
    """Sampling seed; with temperature 0 the output is reproducible anyway."""
    repeat_penalty: float = Field(1.0, ge=0.0, le=5.0)
    dry_multiplier: float = Field(0.0, ge=0.0, le=5.0)
    """DRY ("don't repeat yourself") sampling strength; 0 disables it. DRY penalises the
    token that would extend a sequence already written, more the longer the repeat: it stops
    a small model writing the same block again and again. Sent to servers that support it."""
    dry_base: float = Field(1.75, ge=1.0, le=4.0)
    """How fast the DRY penalty grows with the length of the repeat."""
    dry_allowed_length: int = Field(2, ge=1, le=64)
    """Repeats up to this many tokens are not penalised."""
    dry_penalty_last_n: int = Field(-1, ge=-1)
    """Tokens DRY looks back over; -1 the whole answer, 0 disables DRY."""
    dry_sequence_breakers: list[str] = Field(
        default_factory=lambda: ["\n", ":", '"', "*"], max_length=16
    )
    """Strings that end a repeat DRY tracks (llama.cpp's defaults)."""
    prompt_examples: bool = True
    """Send the prompt profile's worked examples (an issue and its complete answer) before
    the issue. A base model needs them; an instruction-tuned one may do without (and save
    their tokens)."""

    @model_validator(mode="after")
    def _dry_breakers(self) -> ProfileBase:
        for breaker in self.dry_sequence_breakers:
            if not breaker or len(breaker) > 40:
                raise ValueError(
                    f"dry_sequence_breakers: {breaker!r} must be a non-empty string of at "
                    "most 40 characters"
                )
        return self


class LlamaCppProfile(ProfileBase):
    """A GGUF model run in-process by llama.cpp (llama-cpp-python)."""

    backend: Literal["llama_cpp"]
    parseable_files: bool = False
    """Refuse to end a ``.py``/``.json``/``.toml`` file where it does not parse (at most 24
    times a file). Off by default: on the answer-quality bench the embedded 270M model then
    looped where it had stopped early (docs/benchmarks.md); a model that mostly writes
    whole files gains from it."""
    backtrack: int = Field(64, ge=0, le=4096)
    """Rewinds per answer: where the answer starts repeating itself (a line or list item
    written twice, a short unit three times) or a line of a ``.py`` file cannot parse, the
    decoding loop takes those tokens back and picks another token there (greedy decoding
    stays reproducible). 0 turns it off."""
    model_path: str | None = None
    """Path of a GGUF file (``~`` expanded; relative to the config file that names it)."""
    model_package: str | None = None
    """An installed Python package that provides a GGUF through ``assemble()``."""
    chat_format: str | None = None
    """llama-cpp-python chat format; required when the GGUF carries no chat template."""
    n_gpu_layers: int = Field(0, ge=-1)
    """Layers offloaded to the GPU; -1 offloads all of them."""
    flash_attn: bool = False
    n_threads: int | None = Field(None, ge=1)
    """CPU threads; default: all physical cores llama.cpp sees."""
    n_batch: int = Field(512, ge=1)
    cpu_extra_buffers: bool | None = None
    """llama.cpp's repacked CPU weight buffers (its ``--no-repack`` turns them off). Default
    (unset): on, except where the llama.cpp build uses Intel AMX, whose matrix multiply crashes
    the process on Q4_K models on some CPUs (ggml-org/llama.cpp#20824)."""

    @model_validator(mode="after")
    def _one_source(self) -> LlamaCppProfile:
        if (self.model_path is None) == (self.model_package is None):
            raise ValueError("set exactly one of 'model_path' (a GGUF file) or 'model_package'")
        return self


class OllamaProfile(ProfileBase):
    """A model served by an Ollama server."""

    backend: Literal["ollama"]
    model: str
    """The Ollama tag, e.g. ``qwen2.5-coder:7b``."""
    host: str | None = None
    """Server URL; default: ``$OLLAMA_HOST`` or ``http://127.0.0.1:11434``."""
    n_gpu_layers: int | None = Field(None, ge=-1)
    """Sent as ``num_gpu`` when set."""
    keep_alive: str = "5m"

    @model_validator(mode="after")
    def _no_credentials(self) -> OllamaProfile:
        if self.host:
            _no_credentials_in_url(self.host, "host")
        return self


class OpenAIProfile(ProfileBase):
    """A model served by an OpenAI-compatible server (vLLM, SGLang, llama-server)."""

    backend: Literal["openai"]
    base_url: str
    """e.g. ``http://gpu-box:8000/v1``."""
    model: str
    api_key_env: str | None = None
    """The NAME of the environment variable holding the API key (never the key)."""
    concurrency: int = Field(4, ge=1, le=256)
    """How many generations may run at once against this server."""
    timeout: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _key_by_name_only(self) -> OpenAIProfile:
        name = self.api_key_env
        if name is not None and name.upper() in RESERVED_KEY_ENVS:
            raise ValueError(
                f"api_key_env may not name {name}: that variable holds a GitHub "
                "token, which is never sent to a model server"
            )
        if name is not None and not _ENV_NAME_RE.match(name):
            # never echo it: it is most likely the key itself
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (like OPENAI_API_KEY); "
                "the value given is not one (if it is the key, it is not shown; rotate it)"
            )
        _no_credentials_in_url(self.base_url, "base_url")
        return self


ModelProfile = Annotated[
    LlamaCppProfile | OllamaProfile | OpenAIProfile, Field(discriminator="backend")
]


class GitHubSettings(_Strict):
    """Where issues come from and pull requests go."""

    api_url: str = "https://api.github.com"
    """API base URL; GitHub Enterprise: ``https://HOST/api/v3``."""
    remote: str = "origin"
    """The remote whose URL names owner/repo."""
    repo: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    """``owner/name`` on GitHub; default: parsed from the remote's URL."""
    issues: Literal["auto", "github", "local"] = "auto"
    """Issue source: ``auto`` uses GitHub when the remote is on GitHub (or ``repo`` is set),
    else the Markdown issues in ``.agent-tui/issues/``."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds before a GitHub API request gives up (then the cache is served)."""


class PublishSettings(_Strict):
    """How a proposal becomes a branch, a push and a pull request."""

    branch_prefix: str = "agent/"
    remote: str = "origin"
    base: str | None = None
    """Base branch; default: the remote's default branch."""
    draft: bool = True
    test_command: str | None = None
    """Run in the temporary worktree before pushing, e.g. ``pytest -q``."""
    test_timeout: float = Field(default=600.0, gt=0)
    tests_in_body: bool = False
    """Append the test command's result to the pull request's body."""
    labels: list[str] = Field(default_factory=list)
    """Labels put on every pull request agent-tui opens, e.g. ``["agent-tui"]``."""


class GenerationSettings(_Strict):
    """Bounds on what one generation may produce."""

    max_files: int = Field(default=DEFAULT_MAX_FILES, ge=1, le=MAX_FILES_LIMIT)
    path_scope: Literal["tree", "any"] = "tree"
    """``tree``: the grammar lets the model write files only in the repository's directories
    (or one new directory below one of them), the top-level files that exist and the paths
    the issue names, so a small model cannot copy a worked example's layout. ``any``: any
    safe relative path. Trees of more than 300 directories are not bounded either way."""
    log_llama: bool = False
    """Copy llama.cpp's own log lines to the terminal (headless commands; they always go to
    ``<state dir>/logs/llama-PROFILE.log``). ``--verbose`` does the same for one command."""


class TuiSettings(_Strict):
    """Terminal UI preferences."""

    preload_model: bool = False
    keymap: dict[str, str] = Field(default_factory=dict)
    """Binding id -> keys, e.g. ``{"generate" = "ctrl+g"}``."""


class ConfigFile(_Strict):
    """The shape of every config file (all keys optional)."""

    default_model: str | None = None
    default_prompt: str | None = None
    models: dict[str, ModelProfile] = Field(default_factory=dict)
    github: GitHubSettings = Field(default_factory=GitHubSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    tui: TuiSettings = Field(default_factory=TuiSettings)


_SECTIONS: dict[str, type[_Strict]] = {
    "github": GitHubSettings,
    "publish": PublishSettings,
    "generation": GenerationSettings,
    "tui": TuiSettings,
}


@dataclass
class AppConfig:
    """The merged, validated configuration."""

    default_model: str
    default_prompt: str
    models: dict[str, LlamaCppProfile | OllamaProfile | OpenAIProfile]
    github: GitHubSettings
    publish: PublishSettings
    generation: GenerationSettings
    tui: TuiSettings
    sources: dict[str, Path] = field(default_factory=dict)
    """Profile name -> the file that defined it."""
    files: list[Path] = field(default_factory=list)
    """The files read, farthest first."""
    repo_file: Path | None = None
    """The repository's ``.agent-tui.toml``, when there is one."""
    repo_trusted: bool = False
    """The user trusted the repository file with its current content (``agent-tui trust``)."""
    untrusted: list[str] = field(default_factory=list)
    """Settings of the untrusted repository file that were ignored (``models.x``,
    ``github.api_url``, ``publish.test_command``...)."""

    def untrusted_message(self) -> str | None:
        """One line naming the ignored repository settings and how to trust them, or None."""
        if not self.untrusted or self.repo_file is None:
            return None
        return (
            f"{self.repo_file}: repository config not trusted; ignoring "
            f"{', '.join(self.untrusted)} (settings that send data or credentials or run "
            "commands). Review and trust the file with `agent-tui trust`."
        )

    def profile(self, name: str | None = None) -> LlamaCppProfile | OllamaProfile | OpenAIProfile:
        """The named model profile (default: ``default_model``).

        Raises:
            UnknownProfileError: naming the known profiles.
        """
        key = name or self.default_model
        try:
            return self.models[key]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "(none)"
            raise UnknownProfileError(
                f"no model profile named {key!r}; known profiles: {known}",
                hint="run `agent-tui models` to list them, or add one to models.toml",
            ) from None


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("llama_cpp", "ollama", "openai")]
    return ".".join(parts) or "(top level)"


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Allowed keys at the table that holds the unknown key ``loc``."""
    if len(loc) == 1:
        return sorted(ConfigFile.model_fields)
    if loc[0] == "models" and len(loc) >= 3:
        backend = loc[2]
        for cls in (LlamaCppProfile, OllamaProfile, OpenAIProfile):
            if cls.model_fields["backend"].annotation == Literal[backend]:  # type: ignore[valid-type]
                return sorted(cls.model_fields)
    if isinstance(loc[0], str) and loc[0] in _SECTIONS:
        return sorted(_SECTIONS[loc[0]].model_fields)
    return []


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _loc(loc)
        key = str(loc[-1]) if loc else ""
        if err["type"] == "extra_forbidden":
            where = _loc(loc[:-1])
            if any(word in key.lower() for word in _SECRET_WORDS):
                lines.append(
                    f"{path}: {where}: secrets never live in config files; put the NAME of "
                    "an environment variable in 'api_key_env' and export the key there"
                )
                continue
            allowed = _allowed_keys(loc)
            extra = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{path}: {where}: unknown key '{key}'{extra}")
        elif err["type"] == "union_tag_invalid":
            lines.append(f"{path}: {where}: backend must be one of 'llama_cpp', 'ollama', 'openai'")
        elif err["type"] == "union_tag_not_found":
            lines.append(
                f"{path}: {where}: missing key 'backend' (one of 'llama_cpp', 'ollama', 'openai')"
            )
        elif err["type"] == "missing":
            lines.append(f"{path}: {where}: missing required key '{key}'")
        else:
            lines.append(f"{path}: {where}: {err['msg']}")
    return "\n".join(lines)


def sensitive_settings(parsed: ConfigFile) -> list[str]:
    """The settings of a config file that need the user's trust when a repository sets them.

    They send data or credentials somewhere, or run code: ``[github] api_url`` and ``repo``
    (where the token, issues and pull requests go), every model profile except an Ollama one
    on the default host (a ``base_url``/``host`` receives the prompt and maybe an API key, an
    ``api_key_env`` names a credential, a ``model_path``/``model_package`` is loaded by native
    code or imported), ``[publish] test_command`` (runs a command) and ``tests_in_body``
    (publishes its output).

    Returns:
        Dotted names (``models.evil``, ``github.api_url``), in file order.
    """
    found = []
    for name, profile in parsed.models.items():
        if isinstance(profile, OllamaProfile) and profile.host is None:
            continue
        found.append(f"models.{name}")
    for key in ("api_url", "repo"):
        if key in parsed.github.model_fields_set:
            found.append(f"github.{key}")
    for key in ("test_command", "tests_in_body"):
        if key in parsed.publish.model_fields_set:
            found.append(f"publish.{key}")
    return found


def load_file(path: Path) -> tuple[ConfigFile, dict[str, Any]]:
    """Parse and validate one config file on its own.

    Returns:
        The validated file and its raw TOML table.

    Raises:
        ConfigError: naming the file, the key and what is allowed.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            _format_errors(path, exc),
            hint="see the 'Configuration' section of the README for every key",
        ) from None
    for profile in parsed.models.values():
        if isinstance(profile, LlamaCppProfile) and profile.model_path:
            p = Path(profile.model_path).expanduser()
            if not p.is_absolute():
                p = (path.parent / p).resolve()
            profile.model_path = str(p)
    return parsed, raw


def load_config(
    repo_dir: Path | None = None,
    *,
    user_config: Path | None = None,
    bundled: Path | None = None,
) -> AppConfig:
    """Load and merge every config layer.

    Args:
        repo_dir: where to look for ``.agent-tui.toml`` (default: the current directory).
        user_config: override of the user config path (tests).
        bundled: override of the shipped ``models.toml`` (tests).

    Raises:
        ConfigError: for any invalid file, or a default that names no profile.
    """
    layers: list[Path] = [bundled or bundled_models_toml()]
    user = user_config or user_config_path()
    if os.environ.get(CONFIG_ENV_VAR) and not user.is_file() and user_config is None:
        raise ConfigError(f"${CONFIG_ENV_VAR} points to {user}, which is not a file")
    if user.is_file():
        layers.append(user)
    repo_file = find_repo_config(repo_dir or Path.cwd())
    if repo_file is not None:
        layers.append(repo_file)

    default_model: tuple[str, Path] | None = None
    default_prompt = "backend-dev"
    models: dict[str, Any] = {}
    sources: dict[str, Path] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    repo_trusted = False
    untrusted: list[str] = []
    for path in layers:
        parsed, _raw = load_file(path)
        ignored: set[str] = set()
        if path == repo_file:
            repo_trusted = trust.is_trusted(path)
            if not repo_trusted:
                untrusted = sensitive_settings(parsed)
                ignored = set(untrusted)
        if parsed.default_model:
            if f"models.{parsed.default_model}" in ignored:
                untrusted.append("default_model")
            else:
                default_model = (parsed.default_model, path)
        if parsed.default_prompt:
            default_prompt = parsed.default_prompt
        for name, profile in parsed.models.items():
            if f"models.{name}" in ignored:
                continue
            models[name] = profile
            sources[name] = path
        for section in _SECTIONS:
            values = getattr(parsed, section).model_dump(exclude_unset=True)
            for key in list(values):
                if f"{section}.{key}" in ignored:
                    del values[key]
            sections[section].update(values)

    if default_model is None:
        if not models:
            raise ConfigError("no model profile is defined in any config file")
        default_model = (sorted(models)[0], layers[0])
    name, where = default_model
    if name not in models:
        known = ", ".join(sorted(models))
        raise ConfigError(f"{where}: default_model: no profile named {name!r} (known: {known})")
    return AppConfig(
        default_model=name,
        default_prompt=default_prompt,
        models=models,
        github=GitHubSettings.model_validate(sections["github"]),
        publish=PublishSettings.model_validate(sections["publish"]),
        generation=GenerationSettings.model_validate(sections["generation"]),
        tui=TuiSettings.model_validate(sections["tui"]),
        sources=sources,
        files=layers,
        repo_file=repo_file,
        repo_trusted=repo_trusted,
        untrusted=untrusted,
    )


_PROFILE_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelProfile)


def parse_profile(data: dict[str, Any]) -> LlamaCppProfile | OllamaProfile | OpenAIProfile:
    """Validate one profile from a plain dict (tests and the CLI's ``--set``)."""
    result: LlamaCppProfile | OllamaProfile | OpenAIProfile = _PROFILE_ADAPTER.validate_python(data)
    return result
