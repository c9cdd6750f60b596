"""``agent-tui generate ISSUE`` end to end: a real repository, local issues, the embedded model.

Each run goes through the whole session (context, constrained generation, checks, history)
and the process's answer is checked: the proposal on stdout or in ``--out``, progress on
stderr, the exit status documented in the README, the history entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.cli.exitcodes import ERROR, FAILED_CHECK, OK, TRUNCATED, USAGE
from engine.generate.backends.model_host import HostedLlamaBackend
from engine.publish.store import Store
from tests.cli_repo import BROKEN, issue_body, llama_profile, prepare_repo, simple_issues

pytestmark = pytest.mark.model


@pytest.fixture
def repo(git_repo: Path, embedded_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    issues = simple_issues(1, 2)
    issues[3] = {"title": "Add a broken module", "labels": [], "body": issue_body(3, **BROKEN)}
    prepare_repo(git_repo, issues)
    config = git_repo.parent / "config.toml"
    config.write_text(llama_profile(embedded_model_path))
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    return git_repo


def test_generate_issue_writes_the_proposal_and_records_it(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "proposal.json"
    assert main(["generate", "1", "--repo", str(repo), "--out", str(out)]) == OK
    captured = capsys.readouterr()
    proposal = json.loads(out.read_text())
    assert proposal["branch_suffix"] == "file-1"
    assert proposal["files"] == [{"path": "f1.txt", "content": "1\n"}]
    assert captured.out == ""  # the proposal went to --out, not stdout
    err = captured.err
    assert "#1 Add file 1: prompt" in err and "prompt profile tiny" in err
    assert "tok/s" in err and "done: 1 file(s)" in err
    assert "0 error(s)" in err and "history #" in err

    [record] = Store.for_repo(repo).generations(issue=1)
    assert record.outcome == "generated" and record.proposal == proposal
    assert record.model_profile == "t" and record.prompt_profile == "tiny"
    assert record.stats["completion_tokens"] > 0


def test_generate_issue_json_with_an_error_finding_exits_1(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["generate", "3", "--repo", str(repo), "--json", "--prompt-profile", "tiny"])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert code == FAILED_CHECK
    assert data["status"] == "finished" and data["ok"] is False
    assert data["issue"] == 3 and data["prompt_profile"] == "tiny"
    assert data["proposal"]["files"][0]["path"] == "b.py"
    codes = {f["code"] for f in data["findings"] if f["severity"] == "error"}
    assert "python-syntax-error" in codes and data["counts"]["error"] >= 1
    assert data["context"]["total_tokens"] <= data["context"]["budget"]
    assert data["diff"]["files"][0]["status"] == "added"
    record = Store.for_repo(repo).generation(data["generation_id"])
    assert record is not None and record.issue_number == 3
    assert "python-syntax-error" in captured.err  # findings rendered for a human too


def test_generate_issue_truncated_exits_3_and_is_recorded_as_failed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "2", "--repo", str(repo), "--max-tokens", "12", "--json"]) == (
        TRUNCATED
    )
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "truncated" and data["partial"]["branch_suffix"] == "file-2"
    assert data["issue"] == 2 and data["model_profile"] == "t" and data["context"]["total_tokens"]
    [record] = Store.for_repo(repo).generations(issue=2)
    assert record.outcome == "failed" and record.detail.startswith("truncated")


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["generate"], ERROR, "name the issue"),
        (["generate", "1", "--prompt-file", "p.txt"], ERROR, "not both"),
        (["generate", "99"], ERROR, "no local issue #99"),
        (["generate", "1", "--profile", "nope"], ERROR, "no model profile named 'nope'"),
        (["generate", "1", "--prompt-profile", "nope"], ERROR, "nope"),
        (["generate", "--prompt-file", "p.txt", "--prompt-profile", "tiny"], ERROR, "ISSUE only"),
        (["generate", "x1"], USAGE, "not an issue number"),
    ],
)
def test_generate_issue_bad_input_is_a_clear_error(
    repo: Path, argv: list[str], code: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "p.txt").write_text("hello")
    if code == USAGE:
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--repo", str(repo)])
        assert exc.value.code == USAGE
    else:
        assert main([*argv, "--repo", str(repo), "--json"]) == code
    captured = capsys.readouterr()
    assert said in captured.err
    if code == ERROR:
        error = json.loads(captured.out)["error"]
        assert error["title"] and said in error["message"] + error["hint"]


def test_a_profile_edited_between_runs_reloads_the_model_safely(
    repo: Path, embedded_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The backend of an edited profile is replaced (the old model freed): the new one must
    not reuse a grammar tokenizer that points into the freed model (it crashed the process)."""
    config = Path(str(repo.parent / "config.toml"))
    config.write_text(llama_profile(embedded_model_path).replace("n_ctx = 1024", "n_ctx = 1000"))
    assert main(["generate", "2", "--repo", str(repo), "--max-tokens", "12", "--json"]) == (
        TRUNCATED
    )
    assert json.loads(capsys.readouterr().out)["partial"]["branch_suffix"] == "file-2"


def test_generate_with_feedback_revises_the_latest_proposal(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TUI's `r`, scripted: the previous answer and the feedback reach the model."""
    sent: list[list[dict[str, str]]] = []
    real = HostedLlamaBackend.generate

    def spy(self: HostedLlamaBackend, request: Any, cancel: Any = None) -> Iterator[Any]:
        sent.append(request.messages)
        yield from real(self, request, cancel)

    monkeypatch.setattr(HostedLlamaBackend, "generate", spy)
    base = ["generate", "1", "--repo", str(repo), "--json"]
    assert main(base) == OK
    first = json.loads(capsys.readouterr().out)
    assert main([*base, "--feedback", "Also write f1b.txt."]) == OK
    second = json.loads(capsys.readouterr().out)
    assert len(sent) == 2 and len(sent[1]) == len(sent[0]) + 2
    assistant, user = sent[1][-2:]
    assert json.loads(assistant["content"]) == first["proposal"]
    assert user["role"] == "user" and "Also write f1b.txt." in user["content"]
    store = Store.for_repo(repo)
    outcomes = {r.id: r.outcome for r in store.generations(issue=1)}
    assert outcomes == {first["generation_id"]: "discarded", second["generation_id"]: "generated"}
    # --previous names the entry; a wrong one is a clear error, and nothing is generated
    for argv, message in (
        (["--previous", "999"], "no generation #999"),
        (["--previous", str(second["generation_id"]), "--feedback", " "], "--feedback is empty"),
    ):
        args = [*base, *argv] if "--feedback" in argv else [*base, "--feedback", "x", *argv]
        assert main(args) == ERROR
        assert message in capsys.readouterr().err
    assert main(["generate", "2", "--repo", str(repo), "--feedback", "x"]) == ERROR
    assert "no earlier proposal for issue #2" in capsys.readouterr().err
    assert len(sent) == 2
