"""``agent-tui publish`` re-runs the checks with the rules of the prompt profile in use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.cli.exitcodes import FAILED_CHECK, QUEUED
from engine.flow.demo import create_demo
from engine.publish.store import Store
from tests.conftest import git

PROPOSAL = {
    "branch_suffix": "add-notes",
    "commit_message": "docs: add notes",
    "pr_title": "docs: add notes",
    "pr_body": "Adds notes.\n",  # no 'Closes #1': the closes-issue rule's business
    "files": [{"path": "docs/notes.md", "content": "# Notes\n"}],
}


def test_publish_applies_the_rules_of_the_generation_s_prompt_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = create_demo(tmp_path / "demo").repo
    prompts = repo / ".agent-tui" / "prompts"
    prompts.mkdir()
    (prompts / "lenient.md").write_text("---\nchecks: [complete-files]\n---\nWrite docs.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a lenient prompt profile")
    proposal = tmp_path / "proposal.json"
    proposal.write_text(json.dumps(PROPOSAL))
    common = ["publish", str(proposal), "--issue", "1", "--repo", str(repo), "--yes"]

    # default_prompt (backend-dev) names closes-issue: the missing 'Closes #1' refuses it
    assert main(common) == FAILED_CHECK
    assert "closes-missing" in capsys.readouterr().err

    # a generation made with the lenient profile: its rules apply, the body gets 'Closes #1'
    gid = Store.for_repo(repo).record_generation(
        issue_number=1, model_profile="gemma3-270m", prompt_profile="lenient", proposal=PROPOSAL
    )
    assert main([*common, "--generation", str(gid)]) == QUEUED  # no GitHub: the outbox
    err = capsys.readouterr().err
    assert "closes-missing" not in err
    assert "Closes #1" in Store.for_repo(repo).jobs()[0].pr_body
    branches = git(tmp_path / "demo" / "origin.git", "branch", "--list").split()
    assert "agent/1-add-notes" in branches
