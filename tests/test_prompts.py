"""Prompt profiles: the shipped default, nearest-first search, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import platformdirs
import pytest

from engine.context.prompts import discover_profiles, list_profiles, load_profile, parse_profile
from engine.core.errors import PromptProfileError, UnknownProfileError
from engine.core.resources import bundled_prompts_dir

PROFILE = """---
name: {name}
description: {description}
checks: [complete-files]
always_include: [app/main.py]
---
{body}
"""


def user_dir() -> Path:
    return Path(platformdirs.user_config_dir("agent-tui")) / "prompts"


def put(directory: Path, name: str, description: str, body: str = "Be careful.") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    path.write_text(PROFILE.format(name=name, description=description, body=body))
    return path


def test_default_profile_is_the_backend_dev_agent() -> None:
    profile = load_profile()
    assert profile.name == "backend-dev" and profile.origin == "bundled"
    assert profile.path == bundled_prompts_dir() / "backend-dev.md"
    text = profile.system_prompt
    # the seed's identity, stack, structure, conventions and rules
    for heading in (
        "## Your Identity",
        "## Tech Stack",
        "## Project Structure",
        "## Code Conventions",
        "## Rules",
    ):
        assert heading in text
    assert "Backend Dev Agent" in text and "FastAPI" in text and "SQLAlchemy 2.0" in text
    # what each answer field means and its rules, without the free-text JSON instructions
    assert "Closes #" in text and "30 characters" in text and "requirements.txt" in text
    assert "test file for every new endpoint" in text
    assert "no markdown fences" not in text and "```json" not in text
    assert not text.startswith("---")
    assert {"closes-issue", "branch-suffix", "complete-files"} <= set(profile.checks)
    assert "requirements.txt" in profile.always_include and "app/main.py" in profile.always_include


def test_nearest_profile_wins(git_repo: Path) -> None:
    put(user_dir(), "backend-dev", "user copy")
    assert load_profile("backend-dev", git_repo).description == "user copy"
    assert load_profile("backend-dev", git_repo).origin == "user"
    put(git_repo / ".agent-tui" / "prompts", "backend-dev", "repo copy")
    sub = git_repo / "src" / "deep"
    sub.mkdir(parents=True)
    found = load_profile("backend-dev", sub)  # found from a subdirectory of the work tree
    assert found.description == "repo copy" and found.origin == "repo"
    assert found.checks == ("complete-files",) and found.always_include == ("app/main.py",)
    put(user_dir(), "frontend", "user only")
    names = {p.name: p.origin for p in list_profiles(git_repo)}
    assert names == {"backend-dev": "repo", "frontend": "user"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("You are an agent.\n", "starts with a '---' line"),
        ("---\nname: broken\nYou are an agent.\n", "not closed"),
        ("---\nname: broken\ndescription: a: b\n---\nbody\n", "front matter (line 3)"),
        ("---\n- a list\n---\nbody\n", "must be a mapping"),
        ("---\nname: broken\nchecks: complete-files\nalways: [x]\n---\nbody\n", "'always'"),
        ("---\nname: other\n---\nbody\n", "'name' is 'other'"),
        ("---\nname: broken\n---\n\n  \n", "no text after its front matter"),
        ("---\nchecks: [1, 2]\n---\nbody\n", "'checks' must be a list"),
        ("---\nchecks: [Closes Issue]\n---\nbody\n", "kebab-case"),
        ("---\nchecks: [complete-files, no-such-rule]\n---\nbody\n", "'no-such-rule'"),
        ("---\nalways_include: [/etc/passwd]\n---\nbody\n", "repository-relative"),
        ("---\nalways_include: [../up.py]\n---\nbody\n", "repository-relative"),
        ("---\ndescription: [1]\n---\nbody\n", "'description' must be a string"),
    ],
)
def test_broken_profile_is_a_clear_error_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "broken.md"
    path.write_text(text)
    with pytest.raises(PromptProfileError) as exc:
        parse_profile(path)
    assert str(path) in exc.value.message
    assert expected in exc.value.message
    assert exc.value.hint and exc.value.title == "Prompt profile error"


def test_a_broken_nearer_profile_is_reported_not_skipped(git_repo: Path) -> None:
    broken = git_repo / ".agent-tui" / "prompts" / "backend-dev.md"
    broken.parent.mkdir(parents=True)
    broken.write_text("---\nname: backend-dev\nchecks: {oops\n---\nbody\n")
    with pytest.raises(PromptProfileError) as exc:
        load_profile("backend-dev", git_repo)
    assert str(broken) in exc.value.message
    profiles, errors = discover_profiles(git_repo)
    assert "backend-dev" not in {p.name for p in profiles}
    assert len(errors) == 1 and str(broken) in errors[0].message
    with pytest.raises(PromptProfileError):
        list_profiles(git_repo)
    bad_bytes = git_repo / ".agent-tui" / "prompts" / "latin.md"
    bad_bytes.write_bytes(b"---\nname: latin\n---\ncaf\xe9\n")
    with pytest.raises(PromptProfileError, match="not UTF-8"):
        load_profile("latin", git_repo)


def test_unknown_profile_lists_the_known_ones(git_repo: Path) -> None:
    put(git_repo / ".agent-tui" / "prompts", "team-agent", "ours")
    with pytest.raises(UnknownProfileError) as exc:
        load_profile("nope", git_repo)
    assert "backend-dev" in exc.value.message and "team-agent" in exc.value.message
    assert ".agent-tui/prompts" in exc.value.hint
    with pytest.raises(UnknownProfileError):
        load_profile("../backend-dev", git_repo)


def test_prompt_list_command(git_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    put(git_repo / ".agent-tui" / "prompts", "team-agent", "ours")
    (git_repo / ".agent-tui" / "prompts" / "bad.md").write_text("no front matter\n")
    assert main(["prompt", "--list", "--json", "--repo", str(git_repo)]) == 0
    data = json.loads(capsys.readouterr().out)
    origins = {p["name"]: p["origin"] for p in data["profiles"]}
    assert origins == {"backend-dev": "bundled", "team-agent": "repo"}
    assert len(data["errors"]) == 1 and "bad.md" in data["errors"][0]
    assert main(["prompt", "--list", "--repo", str(git_repo)]) == 0
    out = capsys.readouterr().out
    assert "team-agent" in out and "broken:" in out
    assert main(["prompt", "--repo", str(git_repo)]) == 7  # no issue named
    assert "agent-tui prompt ISSUE" in capsys.readouterr().err
