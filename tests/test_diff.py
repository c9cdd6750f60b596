"""The diff model: statuses, counts and unified diffs against a real repository's base.

Every unified diff is fed to ``git apply`` in the repository, so "compatible with git" is
checked by git itself, not by comparing strings we wrote.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.core.errors import RepoError
from engine.core.models import ChangeProposal, FileChange
from engine.review.diff import FileStatus, RepoBase, diff_file, diff_proposal, split_lines
from tests.conftest import git


def proposal(*files: tuple[str, str]) -> ChangeProposal:
    return ChangeProposal.model_construct(
        branch_suffix="x",
        commit_message="feat: x",
        pr_title="feat: x",
        pr_body="Closes #1",
        files=[FileChange.model_construct(path=p, content=c) for p, c in files],
    )


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def git_apply(repo: Path, patch: str) -> None:
    subprocess.run(
        ["git", "apply", "--whitespace=nowarn", "-"],
        cwd=repo,
        input=patch.encode(),
        check=True,
        capture_output=True,
    )


def test_statuses_counts_and_patch_applies(git_repo: Path) -> None:
    (git_repo / "app.py").write_text("a = 1\nb = 2\nc = 3\n")
    (git_repo / "same.txt").write_text("same\n")
    commit_all(git_repo, "files")
    prop = proposal(
        ("app.py", "a = 1\nb = 20\nc = 3\nd = 4\n"),
        ("same.txt", "same\n"),
        ("pkg/new.py", "x = 1\ny = 2"),
    )
    diff = diff_proposal(prop, git_repo)
    by_path = {f.path: f for f in diff.files}
    assert [f.path for f in diff.files] == ["app.py", "same.txt", "pkg/new.py"]
    assert by_path["app.py"].status is FileStatus.MODIFIED
    assert (by_path["app.py"].added, by_path["app.py"].removed) == (2, 1)
    assert by_path["same.txt"].status is FileStatus.UNCHANGED
    assert by_path["same.txt"].unified == ""
    assert by_path["pkg/new.py"].status is FileStatus.ADDED
    assert (by_path["pkg/new.py"].added, by_path["pkg/new.py"].removed) == (2, 0)
    assert "\\ No newline at end of file" in by_path["pkg/new.py"].unified
    assert (diff.added, diff.removed) == (4, 1)
    assert diff.count(FileStatus.ADDED) == 1
    summary = diff.summary()
    assert "1 added, 1 modified, 1 unchanged; +4 -1" in summary
    assert "  M app.py  +2 -1" in summary

    git_apply(git_repo, diff.unified())
    assert (git_repo / "app.py").read_text() == "a = 1\nb = 20\nc = 3\nd = 4\n"
    assert (git_repo / "pkg/new.py").read_text() == "x = 1\ny = 2"


def test_base_is_head_not_the_working_tree(git_repo: Path) -> None:
    (git_repo / "README.md").write_text("# uncommitted edit\n")
    diff = diff_proposal(proposal(("README.md", "# test repo\n")), git_repo)
    assert diff.files[0].status is FileStatus.UNCHANGED


def test_given_ref(git_repo: Path) -> None:
    first = git(git_repo, "rev-parse", "HEAD").strip()
    (git_repo / "README.md").write_text("# second\n")
    commit_all(git_repo, "second")
    prop = proposal(("README.md", "# test repo\n"))
    assert diff_proposal(prop, git_repo).files[0].status is FileStatus.MODIFIED
    at_first = diff_proposal(prop, git_repo, ref=first)
    assert at_first.files[0].status is FileStatus.UNCHANGED
    assert at_first.base == first
    with pytest.raises(RepoError, match="does not name a commit"):
        diff_proposal(prop, git_repo, ref="no-such-branch")


def test_without_git_the_working_tree_is_the_base(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    diff = diff_proposal(proposal(("a.txt", "one\n"), ("b.txt", "new\n")), tmp_path)
    assert diff.base == "working tree"
    assert [(f.status, f.removed) for f in diff.files] == [
        (FileStatus.MODIFIED, 1),
        (FileStatus.ADDED, 0),
    ]
    with pytest.raises(RepoError):
        RepoBase(tmp_path, "main")
    with pytest.raises(RepoError, match="not a directory"):
        RepoBase(tmp_path / "missing")


def test_repository_without_commits_compares_with_working_tree(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "a.txt").write_text("x\n")
    base = RepoBase(tmp_path)
    assert not base.is_git and base.read_text("a.txt") == "x\n"


def test_subdirectory_as_repo_dir(git_repo: Path) -> None:
    (git_repo / "backend").mkdir()
    (git_repo / "backend" / "main.py").write_text("app = 1\n")
    commit_all(git_repo, "backend")
    diff = diff_proposal(proposal(("main.py", "app = 2\n")), git_repo / "backend")
    assert diff.files[0].status is FileStatus.MODIFIED
    assert RepoBase(git_repo / "backend").files() == ["main.py"]


def test_binary_base(git_repo: Path) -> None:
    (git_repo / "logo.bin").write_bytes(b"\x89PNG\xff\x00")
    commit_all(git_repo, "binary")
    f = diff_proposal(proposal(("logo.bin", "text now\n")), git_repo).files[0]
    assert f.status is FileStatus.MODIFIED and f.binary_base
    assert "Binary files" in f.unified


def test_unsafe_paths_never_read_outside(git_repo: Path) -> None:
    secret = git_repo.parent / "secret.txt"
    secret.write_text("top secret\n")
    os.symlink(str(secret), git_repo / "link.txt")
    for base_ref in ("HEAD", None):
        prop = proposal(("../secret.txt", "x\n"), (str(secret), "x\n"), ("link.txt", "x\n"))
        diff = diff_proposal(prop, git_repo, ref=base_ref)
        assert all(f.status is FileStatus.ADDED for f in diff.files)
        assert "top secret" not in diff.unified()


def test_symlinks_in_the_base_tree(git_repo: Path) -> None:
    os.symlink("../outside", git_repo / "out")
    commit_all(git_repo, "symlink")
    base = RepoBase(git_repo)
    assert base.symlink_target("out") == "../outside"
    assert base.entry_mode("out") == "120000"
    assert base.read_bytes("out") is None  # a link is not file content


def test_crlf_and_form_feed_count_by_newline_only() -> None:
    assert split_lines("a\r\nb\x0cc\n") == ["a\r\n", "b\x0cc\n"]
    f = diff_file("w.txt", "a\r\nb\r\n", "a\r\nB\r\n")
    assert (f.added, f.removed, f.old_lines) == (1, 1, 2)


def test_to_dict_is_json_ready(git_repo: Path) -> None:
    import json

    data = diff_proposal(proposal(("README.md", "# changed\n")), git_repo).to_dict()
    assert json.loads(json.dumps(data))["files"][0]["status"] == "modified"
    assert data["files"][0]["diff"].startswith("diff --git a/README.md b/README.md\n")
