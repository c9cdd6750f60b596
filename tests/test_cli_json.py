"""``--json`` everywhere: every headless command has it, and its stdout is one JSON document.

Why: scripts and CI read stdout. Whatever happens (success, a finding, a refused publish, a
configuration error), ``--json`` must print exactly one parseable object or list there, and
the exit status must be the one the README documents. The flags scripts rely on (``--repo``,
``--json``; ``--profile`` for a model profile where a command takes one) are checked on the
parser itself, so a new command cannot forget them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.cli import build_parser, command_modules, main
from engine.cli.exitcodes import ERROR, FAILED_CHECK, OK, TRUNCATED
from engine.publish.store import Store
from tests.cli_repo import (
    BROKEN,
    issue_body,
    llama_profile,
    prepare_repo,
    proposal_for,
    server_profile,
    simple_issues,
)

HEADLESS = sorted(str(m.NAME) for m in command_modules())
#: commands that take a model profile
MODEL_COMMANDS = {"batch", "doctor", "generate", "publish"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_every_command_has_json_and_repo_and_model_commands_take_profile() -> None:
    parsers = _subparsers()
    assert set(HEADLESS) <= set(parsers)
    assert {"batch", "generate", "issues", "publish", "sync", "history"} <= set(HEADLESS)
    for name in HEADLESS:
        opts = _options(parsers[name])
        assert {"--json", "--repo"} <= opts, name
        if name in MODEL_COMMANDS:
            assert "--profile" in opts, name
    assert "--prompt-profile" in _options(parsers["generate"]) & _options(parsers["batch"])


@pytest.fixture
def repo(
    git_repo: Path,
    embedded_model_path: Path,
    fake_model_server: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    issues = simple_issues(1)
    issues[3] = {"title": "Add a broken module", "labels": [], "body": issue_body(3, **BROKEN)}
    prepare_repo(git_repo, issues)
    server = fake_model_server()
    config = git_repo.parent / "config.toml"
    config.write_text(llama_profile(embedded_model_path) + server_profile(server.v1))
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    (git_repo.parent / "clean.json").write_text(proposal_for(1))
    (git_repo.parent / "broken.json").write_text(proposal_for(3, **BROKEN))
    (git_repo.parent / "prompt.txt").write_text("Reply with this JSON exactly: " + proposal_for(2))
    store = Store.for_repo(git_repo)
    store.record_generation(issue_number=1, proposal=json.loads(proposal_for(1)))
    return git_repo


#: (argv after the command name; files are relative to the repo's parent), exit status, check
CASES: list[tuple[str, list[str], int, Callable[[Any], bool]]] = [
    ("models", [], OK, lambda d: d["default"] == "t" and "srv" in str(d["profiles"])),
    # only srv is checked, and it is the profile the exit status speaks of
    (
        "doctor",
        ["--profile", "srv"],
        OK,
        lambda d: d["default_profile"] == "t" and d["runnable"] == {"srv": True},
    ),
    ("issues", [], OK, lambda d: sorted(i["number"] for i in d["issues"]) == [1, 3]),
    ("issues", ["--label", "easy"], OK, lambda d: [i["number"] for i in d["issues"]] == [1]),
    ("history", [], OK, lambda d: d[0]["issue_number"] == 1),
    ("history", ["--jobs"], OK, lambda d: d == []),
    ("history", ["--show", "1"], OK, lambda d: d["proposal"]["branch_suffix"] == "file-1"),
    ("history", ["--show", "9"], ERROR, lambda d: "no generation #9" in d["error"]["message"]),
    ("check", ["@clean.json", "--issue", "1"], OK, lambda d: d["ok"] is True),
    ("check", ["@broken.json", "--issue", "3"], FAILED_CHECK, lambda d: d["counts"]["error"]),
    ("check", ["@missing.json", "--issue", "3"], ERROR, lambda d: d["ok"] is False),
    ("prompt", ["--list"], OK, lambda d: "tiny" in [p["name"] for p in d["profiles"]]),
    ("prompt", ["1", "--model", "srv"], OK, lambda d: d["issue"] == 1 and d["messages"]),
    ("prompt", ["1", "--profile", "srv"], OK, lambda d: d["issue"] == 1 and d["messages"]),
    ("prompt", ["1", "--profile", "nope"], ERROR, lambda d: "nope" in d["error"]["message"]),
    ("prompt", [], ERROR, lambda d: "name the issue" in d["error"]["message"]),
    ("sync", [], OK, lambda d: d == []),
    (
        "publish",
        ["@broken.json", "--issue", "3", "--yes"],
        FAILED_CHECK,
        lambda d: d["status"] == "refused" and d["findings"],
    ),
    (
        "publish",
        ["@clean.json", "--issue", "1", "--yes"],
        ERROR,
        lambda d: "no remote named 'origin'" in d["error"]["message"],
    ),
    (
        "generate",
        ["--prompt-file", "@prompt.txt", "--profile", "srv", "--max-tokens", "8"],
        TRUNCATED,
        lambda d: d["status"] == "truncated" and d["stats"]["completion_tokens"] == 8,
    ),
    (
        "generate",
        ["1", "--profile", "srv", "--max-tokens", "8"],
        TRUNCATED,
        lambda d: d["status"] == "truncated" and d["stats"]["completion_tokens"] == 8,
    ),
    ("generate", [], ERROR, lambda d: "name the issue" in d["error"]["message"]),
    ("batch", ["--issues", "42"], ERROR, lambda d: "no local issue #42" in d["error"]["message"]),
]


@pytest.mark.model
@pytest.mark.parametrize(
    ("command", "args", "code", "check"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_json_output_parses_with_the_documented_status(
    repo: Path,
    command: str,
    args: list[str],
    code: int,
    check: Callable[[Any], bool],
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.replace("@", f"{repo.parent}/") if a.startswith("@") else a for a in args]
    assert main([command, *argv, "--repo", str(repo), "--json"]) == code
    data = json.loads(capsys.readouterr().out)  # one JSON document, nothing else
    assert check(data)


@pytest.mark.parametrize("command", HEADLESS)
def test_json_errors_outside_a_repository_still_parse(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing directory fails with a titled error, and stdout still holds one JSON object."""
    required = {
        "check": ["x.json", "--issue", "1"],
        "publish": ["x.json", "--issue", "1", "--yes"],
        "generate": ["1"],
        "batch": ["--issues", "1"],
        "prompt": ["1"],
    }
    argv = [command, *required.get(command, []), "--repo", str(tmp_path / "nowhere"), "--json"]
    assert main(argv) == ERROR
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["error"]["title"] == "Configuration error"
    assert "nowhere is not a directory" in data["error"]["message"]
