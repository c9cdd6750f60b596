"""The history and outbox database: persistence, filters, the job state machine's guards."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.core.errors import AgentTuiError
from engine.publish.records import PublishJob, finding_to_json
from engine.publish.store import STORE_FILE, Store
from engine.review.checks.registry import Finding

PROPOSAL = {
    "branch_suffix": "x",
    "commit_message": "feat: x",
    "pr_title": "feat: x",
    "pr_body": "Closes #3",
    "files": [{"path": "x.py", "content": "x = 1\n"}],
}


def test_store_lives_in_the_git_dir(git_repo: Path) -> None:
    store = Store.for_repo(git_repo / ".")
    assert store.path == git_repo / ".git" / "agent-tui" / STORE_FILE
    assert store.path.exists()
    # a worktree of the same repository shares the store
    worktree = git_repo.parent / "wt"
    import subprocess

    subprocess.run(["git", "worktree", "add", "-q", str(worktree)], cwd=git_repo, check=True)
    assert Store.for_repo(worktree).path == store.path


def test_generations_recorded_filtered_and_updated(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    finding = Finding("error", "closes-missing", "no Closes #3", path=None)
    first = store.record_generation(
        issue_number=3,
        issue_title="Add x",
        model_profile="coder-7b",
        model_ref="sha256:aa",
        prompt_profile="backend-dev",
        prompt_hash="sha256:bb",
        seed=0,
        proposal=PROPOSAL,
        findings=[finding],
        stats={"tokens": 120, "seconds": 1.5},
    )
    second = store.record_generation(
        issue_number=4, proposal=None, outcome="failed", detail="truncated: token budget"
    )
    assert second > first

    again = Store(tmp_path / "h.sqlite")  # another process opening the same file
    latest, oldest = again.generations()
    assert (latest.id, latest.outcome, latest.detail) == (
        second,
        "failed",
        "truncated: token budget",
    )
    assert oldest.proposal == PROPOSAL and oldest.stats == {"tokens": 120, "seconds": 1.5}
    assert oldest.findings[0]["severity"] == "error"
    assert oldest.findings[0]["code"] == "closes-missing"
    assert [r.id for r in again.generations(issue=3)] == [first]
    assert [r.id for r in again.generations(outcome="failed")] == [second]
    assert len(again.generations(limit=1)) == 1

    again.set_outcome(first, "published", job_id=9, pr_url="https://x/pull/1")
    again.set_outcome(first, "published", detail="again")  # keeps the job and PR links
    record = again.generation(first)
    assert record is not None
    assert (record.outcome, record.job_id, record.pr_url) == ("published", 9, "https://x/pull/1")
    with pytest.raises(ValueError, match="unknown outcome"):
        again.set_outcome(first, "shipped")  # type: ignore[arg-type]
    assert again.generation(999) is None
    # leaving a preview discards only what is still merely generated
    assert not again.set_outcome(first, "discarded", only_if="generated")
    assert again.generation(first).outcome == "published"  # type: ignore[union-attr]
    assert again.set_outcome(second, "generated")
    assert again.set_outcome(second, "discarded", only_if="generated")
    assert again.generation(second).outcome == "discarded"  # type: ignore[union-attr]


def test_jobs_move_forward_and_reload_exactly(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    job = store.add_job(
        PublishJob(
            issue_number=3,
            branch="agent/3-x",
            base="main",
            remote="origin",
            proposal=PROPOSAL,
            commit_message="feat: x\n\nAgent-Tui-Seed: 0\n",
            pr_title="feat: x",
            pr_body="Closes #3",
            labels=["bot"],
            draft=False,
        )
    )
    assert job.id and job.state == "planned" and job.status == "pending"
    store.update_job(job, state="committed", head_sha="a" * 40)
    loaded = store.job(job.id)
    assert loaded == job  # every field round-trips (bools, JSON lists and dicts)
    assert loaded.labels == ["bot"] and loaded.draft is False and loaded.proposal == PROPOSAL

    with pytest.raises(ValueError, match="unknown job state"):
        store.update_job(job, state="teleported")
    with pytest.raises(ValueError, match="not a job field"):
        store.update_job(job, token="secret")
    assert [j.id for j in store.pending_jobs()] == [job.id]
    store.update_job(job, status="failed", last_error="GitHub answered 422")
    assert store.pending_jobs() == []
    assert [j.id for j in store.pending_jobs(include_failed=True)] == [job.id]
    assert [j.id for j in store.jobs(branch="agent/3-x")] == [job.id]
    assert store.jobs(branch="other") == []


def test_findings_of_any_shape_are_stored_as_json() -> None:
    @dataclass
    class Plain:
        severity: str
        message: str

    class Obj:
        severity = "warning"
        message = "an object"

    assert finding_to_json(Plain("info", "a dataclass")) == {
        "severity": "info",
        "message": "a dataclass",
    }
    assert finding_to_json(Obj()) == {"severity": "warning", "message": "an object"}
    assert finding_to_json({"severity": "error"}) == {"severity": "error"}
    assert json.dumps(finding_to_json(Finding("error", "c", "m")))


def test_file_hash_cache_follows_size_and_mtime(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 100)
    assert store.cached_hash(model) is None
    store.remember_hash(model, "sha256:abc")
    assert store.cached_hash(model) == "sha256:abc"
    model.write_bytes(b"GGUF" + b"\1" * 200)
    assert store.cached_hash(model) is None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(AgentTuiError, match="newer agent-tui"):
        Store(path)


def test_history_command_lists_shows_and_filters(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store.for_repo(git_repo)
    gid = store.record_generation(
        issue_number=3,
        issue_title="Add x",
        model_profile="m",
        prompt_profile="p",
        proposal=PROPOSAL,
        outcome="discarded",
    )
    store.record_generation(issue_number=5, outcome="failed", detail="loop detected")
    repo = ["--repo", str(git_repo)]
    assert cli_main(["history", *repo]) == 0
    out = capsys.readouterr().out
    assert "discarded" in out and "Add x" in out and "loop detected" in out
    assert cli_main(["history", "--json", "--outcome", "failed", *repo]) == 0
    assert [r["issue_number"] for r in json.loads(capsys.readouterr().out)] == [5]
    assert cli_main(["history", "--show", str(gid), *repo]) == 0
    assert json.loads(capsys.readouterr().out)["proposal"] == PROPOSAL
    assert cli_main(["history", "--show", "999", *repo]) == 7
    assert "no generation #999" in capsys.readouterr().err
    assert cli_main(["history", "--jobs", *repo]) == 0
    assert "no publish jobs" in capsys.readouterr().out
