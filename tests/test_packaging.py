"""``pip install .`` ships models.toml and prompts/ inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_wheel_contains_models_toml_and_prompts(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    wheel = next(tmp_path.glob("agent_tui-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "engine/_bundled/models.toml" in names
    assert "engine/_bundled/prompts/backend-dev.md" in names
    assert "engine/config.py" in names and "tui/cli.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "agent-tui = tui.cli:main" in text
