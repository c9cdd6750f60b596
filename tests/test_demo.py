"""``agent-tui demo --no-tui``: a real demo repository, its bare origin and local issues."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.config import load_config
from engine.core.errors import RepoError
from engine.flow.demo import DEMO_ISSUES, create_demo
from engine.issues.forge.local import LocalIssueSource
from engine.issues.forge.registry import issue_source_for
from tests.conftest import REPO_ROOT, git


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )


def test_demo_no_tui_creates_repo_remote_and_issues(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    out = _cli("demo", "--dir", str(target), "--no-tui")
    assert out.returncode == 0, out.stderr
    repo = Path(out.stdout.strip())
    assert repo == target / "backend"
    for rel in (
        "app/main.py",
        "app/config.py",
        "app/database.py",
        "app/models/base.py",
        "app/api/v1/endpoints/items.py",
        "tests/test_items.py",
        "requirements.txt",
    ):
        assert (repo / rel).is_file(), rel
    # committed on main, clean, and pushed to a bare origin
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(repo, "status", "--porcelain").strip() == ""
    remote = Path(git(repo, "remote", "get-url", "origin").strip())
    assert remote == target / "origin.git"
    assert git(remote, "rev-parse", "--is-bare-repository").strip() == "true"
    assert git(remote, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")
    tracked = git(repo, "ls-files").split()
    assert "app/models/base.py" in tracked
    # the local issues, one per demo issue, with front matter
    issues = sorted((repo / ".agent-tui" / "issues").glob("*.md"))
    assert len(issues) == len(DEMO_ISSUES) >= 3
    first = issues[0].read_text()
    assert first.startswith("---\nnumber: 1\n") and "/health" in first


def test_demo_python_files_compile(tmp_path: Path) -> None:
    demo = create_demo(tmp_path / "d")
    for path in demo.repo.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_demo_reuses_an_existing_demo_and_refuses_other_dirs(tmp_path: Path) -> None:
    first = create_demo(tmp_path / "d")
    again = create_demo(tmp_path / "d")
    assert again.reused and again.repo == first.repo
    (tmp_path / "other" / "backend").mkdir(parents=True)
    with pytest.raises(RepoError) as info:
        create_demo(tmp_path / "other")
    assert "not an agent-tui demo" in info.value.message and info.value.hint


def test_demo_in_a_temp_dir_by_default() -> None:
    demo = create_demo()
    try:
        assert demo.repo.is_dir() and demo.remote.is_dir() and not demo.reused
    finally:
        import shutil

        shutil.rmtree(demo.root)


def test_demo_error_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "backend").mkdir()
    out = _cli("demo", "--dir", str(tmp_path), "--no-tui")
    assert out.returncode == 7
    assert "Repository error" in out.stderr and "Traceback" not in out.stderr


def test_demo_pins_the_embedded_model_and_its_local_issues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user config that points elsewhere does not change what the demo runs on."""
    user = tmp_path / "user.toml"
    user.write_text(
        'default_model = "remote"\ndefault_prompt = "backend-dev"\n\n'
        '[models.remote]\nbackend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'model = "m"\n\n[github]\nissues = "github"\n\n[publish]\nbase = "develop"\n'
    )
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(user))
    demo = create_demo(tmp_path / "demo")
    config = load_config(demo.repo)
    assert config.default_model == "gemma3-270m"
    assert config.github.issues == "local" and config.publish.base == "main"
    source = issue_source_for(demo.repo, config)
    assert isinstance(source, LocalIssueSource)
    assert sorted(i.number for i in source.list_issues()) == sorted(n for _, n, *_ in DEMO_ISSUES)
    assert git(demo.repo, "status", "--porcelain").strip() == ""  # the file is committed
