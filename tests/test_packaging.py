"""``pip install .`` ships models.toml and prompts/ in the wheel, and the installed wheel runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the checkout (once for the module)."""
    dest = tmp_path_factory.mktemp("wheel")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dest),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return next(dest.glob("agent_tui-*.whl"))


def test_wheel_contains_models_toml_and_prompts(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "engine/_bundled/models.toml" in names
    assert "engine/_bundled/prompts/backend-dev.md" in names
    assert "engine/core/config.py" in names and "tui/cli.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "agent-tui = tui.cli:main" in text


def test_installed_wheel_finds_its_bundled_models_and_prompts(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target"]
        + [str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    bundled = target / "engine" / "_bundled"
    elsewhere = tmp_path / "elsewhere"  # not the checkout, not a git repository
    elsewhere.mkdir()
    # the wheel's copy first on the path: it shadows the editable checkout
    env = {**os.environ, "PYTHONPATH": str(target)}

    def cli(*args: str) -> str:
        code = (
            "import sys, engine, tui\n"
            "print(engine.__file__, tui.__file__, file=sys.stderr)\n"
            "from tui.cli import main\n"
            f"raise SystemExit(main({list(args)!r}))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        engine_file, tui_file = done.stderr.splitlines()[0].split()
        assert Path(engine_file).is_relative_to(target), engine_file
        assert Path(tui_file).is_relative_to(target), tui_file
        return done.stdout

    models = json.loads(cli("models", "--json"))
    assert models["default"] == "gemma3-270m"
    by_name = {p["name"]: p for p in models["profiles"]}
    assert by_name["gemma3-270m"]["defined_in"] == str(bundled / "models.toml")

    prompts = json.loads(cli("prompt", "--list", "--json"))
    assert prompts["errors"] == []
    by_name = {p["name"]: p for p in prompts["profiles"]}
    assert by_name["backend-dev"]["origin"] == "bundled"
    assert by_name["backend-dev"]["path"] == str(bundled / "prompts" / "backend-dev.md")
