"""``agent-tui check``: findings, diff summary, exit statuses, ``--fix`` and bad input files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.cli.exitcodes import ERROR, FAILED_CHECK, OK, USAGE

GOOD: dict[str, Any] = {
    "branch_suffix": "add-notes",
    "commit_message": "docs: add notes",
    "pr_title": "docs: add notes",
    "pr_body": "Adds notes.\n\nCloses #3\n",
    "files": [{"path": "docs/notes.md", "content": "# Notes\n"}],
}


def write(tmp_path: Path, data: object, name: str = "proposal.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def run_check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_proposal_exits_0_with_diff_summary(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_check(
        capsys, str(write(tmp_path, GOOD)), "--issue", "3", "--repo", str(git_repo)
    )
    assert code == OK
    assert "0 error(s), 0 warning(s), 0 info — publishable" in out
    assert "1 file(s) against HEAD: 1 added, 0 modified, 0 unchanged; +1 -0" in out
    assert "  A docs/notes.md  +1 -0" in out


def test_error_finding_exits_1_and_is_printed(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {**GOOD, "files": [{"path": "../escape.md", "content": "x\n"}]}
    code, out, _ = run_check(
        capsys, str(write(tmp_path, bad)), "--issue", "3", "--repo", str(git_repo)
    )
    assert code == FAILED_CHECK
    assert "path-traversal" in out and "../escape.md" in out
    assert "blocked" in out
    assert not (git_repo.parent / "escape.md").exists()


def test_warnings_alone_exit_0(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prop = {**GOOD, "files": [{"path": "Makefile", "content": "all:\n\ttrue\n"}]}
    code, out, _ = run_check(
        capsys, str(write(tmp_path, prop)), "--issue", "3", "--repo", str(git_repo)
    )
    assert code == OK
    assert "sensitive-makefile" in out and "after acknowledging the warnings" in out


def test_json_output(git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prop = {**GOOD, "pr_body": "no reference"}
    code, out, _ = run_check(
        capsys, str(write(tmp_path, prop)), "--issue", "3", "--repo", str(git_repo), "--json"
    )
    data = json.loads(out)
    assert code == FAILED_CHECK and data["ok"] is False
    assert data["counts"]["error"] == 1
    (finding,) = data["findings"]
    assert finding["code"] == "closes-missing" and finding["fixable"] is True
    assert data["diff"]["files"][0]["status"] == "added"
    assert "fixed_proposal" not in data


def test_fix_prints_a_proposal_that_then_passes(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prop = {
        **GOOD,
        "branch_suffix": "Add Notes!",
        "pr_body": "Adds notes.",
        "files": [{"path": "docs/notes.md", "content": "# Notes"}],
    }
    path = write(tmp_path, prop)
    code, out, err = run_check(capsys, str(path), "--issue", "3", "--repo", str(git_repo), "--fix")
    assert code == OK
    fixed = json.loads(out)  # stdout is the fixed proposal only
    assert fixed["branch_suffix"] == "add-notes"
    assert fixed["pr_body"].endswith("Closes #3")
    assert fixed["files"][0]["content"] == "# Notes\n"
    assert "publishable" in err
    assert json.loads(path.read_text()) == prop  # the input file is left alone
    again = write(tmp_path, out, "fixed.json")
    assert run_check(capsys, str(again), "--issue", "3", "--repo", str(git_repo))[0] == OK


def test_fix_with_json_and_remaining_errors(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prop = {**GOOD, "pr_body": "", "files": [{"path": ".git/hooks/pre-commit", "content": "x\n"}]}
    code, out, _ = run_check(
        capsys,
        str(write(tmp_path, prop)),
        "--issue",
        "3",
        "--repo",
        str(git_repo),
        "--fix",
        "--json",
    )
    data = json.loads(out)
    assert code == FAILED_CHECK
    assert data["fixed_proposal"]["pr_body"] == "Closes #3"
    assert [f["code"] for f in data["findings"]] == ["path-git-dir"]


def test_shown_and_base_options(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prop = {**GOOD, "files": [{"path": "README.md", "content": "# test repo\n\nMore.\n"}]}
    path = str(write(tmp_path, prop))
    _, out, _ = run_check(
        capsys, path, "--issue", "3", "--repo", str(git_repo), "--shown", "docs/x.md"
    )
    assert "unseen-file-rewritten" in out
    _, out, _ = run_check(
        capsys, path, "--issue", "3", "--repo", str(git_repo), "--shown", "README.md"
    )
    assert "unseen-file-rewritten" not in out
    _, out, _ = run_check(capsys, path, "--issue", "3", "--repo", str(git_repo))
    assert "unseen-file-rewritten" not in out  # unknown: the rule needs --shown
    code, _, err = run_check(
        capsys, path, "--issue", "3", "--repo", str(git_repo), "--base", "nope"
    )
    assert code == ERROR and "does not name a commit" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "not an object"),
        (json.dumps({"branch_suffix": "x"}), "missing commit_message"),
        (json.dumps({**GOOD, "files": {"path": "a"}}), "files is not a list"),
        (json.dumps({**GOOD, "files": [{"path": 1, "content": "x"}]}), "must be strings"),
        (json.dumps({**GOOD, "model": "x"}), "unexpected model"),
    ],
)
def test_invalid_proposal_file_exits_7(
    git_repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    code, out, err = run_check(
        capsys, str(write(tmp_path, content)), "--issue", "3", "--repo", str(git_repo)
    )
    assert code == ERROR == 7
    assert out == ""
    assert err.startswith("Invalid proposal:") and message in err
    assert "hint:" in err


def test_missing_or_binary_file_exits_7(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_check(
        capsys, str(tmp_path / "nope.json"), "--issue", "3", "--repo", str(git_repo)
    )
    assert code == ERROR and "cannot read" in err
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe{}")
    code, _, err = run_check(capsys, str(binary), "--issue", "3", "--repo", str(git_repo))
    assert code == ERROR and "not UTF-8" in err


@pytest.mark.parametrize("issue_args", [[], ["--issue", "0"], ["--issue", "seven"]])
def test_bad_command_line_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], issue_args: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", str(write(tmp_path, GOOD)), *issue_args])
    assert info.value.code == USAGE


def test_console_script_end_to_end(git_repo: Path, tmp_path: Path) -> None:
    """The installed ``agent-tui`` entry point, in a subprocess, run from the repository."""
    exe = Path(sys.executable).parent / "agent-tui"
    bad = {**GOOD, "files": [{"path": "/etc/passwd", "content": "x\n"}]}
    proc = subprocess.run(
        [str(exe), "check", str(write(tmp_path, bad)), "--issue", "3", "--json"],
        cwd=git_repo,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert proc.returncode == FAILED_CHECK, proc.stderr
    assert [f["code"] for f in json.loads(proc.stdout)["findings"]] == ["path-absolute"]


def test_prompt_profile_selects_the_convention_rules(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = git_repo / ".agent-tui" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "lenient.md").write_text(
        "---\nname: lenient\nchecks: [complete-files]\n---\nWrite docs.\n"
    )
    no_closes = write(tmp_path, {**GOOD, "pr_body": "Adds notes.\n"})
    repo = ["--issue", "3", "--repo", str(git_repo)]
    code, out, _ = run_check(capsys, str(no_closes), *repo)
    assert code == FAILED_CHECK and "closes-missing" in out  # default_prompt: every rule
    code, out, _ = run_check(capsys, str(no_closes), *repo, "--prompt-profile", "lenient")
    assert code == OK and "closes-missing" not in out
    # the safety checks run whatever the profile says
    escape = write(tmp_path, {**GOOD, "files": [{"path": "../x.md", "content": "x\n"}]}, "e.json")
    code, out, _ = run_check(capsys, str(escape), *repo, "--prompt-profile", "lenient")
    assert code == FAILED_CHECK and "path-traversal" in out
    code, _, err = run_check(capsys, str(no_closes), *repo, "--prompt-profile", "missing")
    assert code == ERROR and "missing" in err
