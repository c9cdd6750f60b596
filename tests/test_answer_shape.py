"""The answer's shape: a PR body made of the profile's sections, paths in the repository.

A small model loops in free prose ("It is a new endpoint. It is a new endpoint. ...") and
copies a worked example's directories into a repository that has none of them. The
per-generation schema makes both impossible (``AnswerShape``); the in-process engine's
grammar is checked on the real model (greedy and sampled), servers get the same schema, and
the final validation refuses an answer that ignored it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.context.layout import answer_shape, tracked_layout
from engine.context.prompts import parse_profile
from engine.core.errors import PromptProfileError
from engine.core.events import Finished, InvalidAnswer, Looping, Truncated
from engine.core.models import (
    MAX_SHAPE_DIRS,
    AnswerShape,
    BodySection,
    ChangeProposal,
    issue_rule_errors,
    path_pattern,
    pr_body_pattern,
    proposal_json_schema,
)
from engine.core.resources import bundled_prompts_dir
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.llama_cpp import SamplingParams
from engine.generate.grammar import build_grammar
from engine.generate.stream import ProposalStream

SECTIONS = (
    BodySection("Summary", "text"),
    BodySection("Changes", "list"),
    BodySection("Testing", "text"),
)
SHAPE = AnswerShape(
    body_sections=SECTIONS,
    new_file_dirs=("app", "app/api", "tests"),
    fixed_paths=("requirements.txt", "docs/new.md"),
)
GOOD_BODY = (
    '## Summary\nAdds `GET /health`, which answers `{"status": "ok"}`.\n\n'
    "## Changes\n- `app/api/health.py`: the endpoint\n- `tests/test_health.py`: its test\n\n"
    "## Testing\nRun `pytest -q`.\n\nCloses #7"
)


def body_ok(body: str, number: int = 7) -> bool:
    return re.fullmatch(pr_body_pattern(number, SECTIONS), body) is not None


def test_a_body_of_the_sections_passes_and_free_prose_does_not() -> None:
    assert body_ok(GOOD_BODY)
    assert body_ok(GOOD_BODY + ".\n")
    # a second sentence in a one-sentence section: what a looping model writes
    assert not body_ok(GOOD_BODY.replace('ok"}`.', 'ok"}`. It is a new endpoint.'))
    assert not body_ok(GOOD_BODY.replace("Closes #7", "Closes #8"))
    assert not body_ok(GOOD_BODY.replace("## Testing", "## Tests"))
    assert not body_ok(GOOD_BODY.replace("- `tests/", "Also `tests/"))  # not a list item
    assert not body_ok(GOOD_BODY.replace("the endpoint", "fixes #3"))  # another issue
    assert not body_ok(GOOD_BODY.replace("Adds", "\t\tAdds"))  # tabs are not a sentence
    assert not body_ok(GOOD_BODY.replace("Adds", "Adds\x1b[2J"))  # nor control characters
    assert not body_ok(GOOD_BODY.replace("- `tests/test_health.py`: its test", "- "))  # empty
    many = "".join(f"- item {i}\n" for i in range(13))
    assert not body_ok(
        re.sub(r"## Changes\n.*?\n\n", f"## Changes\n{many}\n", GOOD_BODY, flags=re.S)
    )


@given(
    words=st.lists(
        st.text(alphabet=st.sampled_from(list("ab #.`:\n()é1")), max_size=20), max_size=4
    ),
    number=st.integers(min_value=1, max_value=999),
)
def test_every_structured_body_passes_the_closes_checks(words: list[str], number: int) -> None:
    """The sectioned pattern is never looser than the checks that judge the body."""
    from engine.review.checks.conventions import _CLOSING_KEYWORD_RE
    from engine.review.checks.conventions import closes_issue as _closes

    summary = " ".join(words) or "x"
    body = f"## Summary\n{summary}\n\n## Changes\n- a\n\n## Testing\nb\n\nCloses #{number}"
    if re.fullmatch(pr_body_pattern(number, SECTIONS), body):
        assert _closes(body, number)
        assert {int(n) for n in _CLOSING_KEYWORD_RE.findall(body)} == {number}


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("app/main.py", True),
        ("app/api/health.py", True),
        ("app/services/users.py", True),  # one new directory below a known one
        ("tests/test_health.py", True),
        ("requirements.txt", True),
        ("docs/new.md", True),  # named by the issue
        ("app/a/b/c.py", False),  # two new levels
        ("library/routes/text.py", False),  # a worked example's layout
        ("health.py", False),  # a new top-level file nobody named
        ("docs/other.md", False),
        ("app", False),
        ("requirementsXtxt", False),  # '.' is literal
    ],
)
def test_paths_stay_in_the_repository_layout(path: str, allowed: bool) -> None:
    assert (re.fullmatch(path_pattern(SHAPE), path) is not None) is allowed


def test_the_shaped_schema_compiles_and_an_unbounded_shape_changes_no_path() -> None:
    schema = proposal_json_schema(issue_number=7, shape=SHAPE)
    build_grammar(schema)  # every warning is an error: the grammar enforces all of it
    assert schema["$defs"]["FileChange"]["properties"]["path"]["pattern"] == path_pattern(SHAPE)
    free = proposal_json_schema(issue_number=7, shape=AnswerShape(body_sections=SECTIONS))
    assert free["$defs"] == proposal_json_schema(issue_number=7)["$defs"]
    many = AnswerShape(new_file_dirs=tuple(f"pkg{i}/sub" for i in range(MAX_SHAPE_DIRS)))
    build_grammar(proposal_json_schema(issue_number=7, shape=many))
    assert GenerationRequest(messages=[], issue_number=7, shape=SHAPE).schema == schema


def test_a_server_that_ignores_the_shape_gives_an_invalid_answer() -> None:
    answer = {
        "branch_suffix": "add-health",
        "commit_message": "feat: add health",
        "pr_title": "feat: add health",
        "pr_body": GOOD_BODY,
        "files": [{"path": "library/routes/health.py", "content": "x = 1\n"}],
    }
    stream = ProposalStream(issue_number=7, shape=SHAPE)
    stream.feed(json.dumps(answer))
    final = stream.finish("stop", stream.stats)
    assert isinstance(final, InvalidAnswer)
    assert "outside the repository's directories" in final.message
    prose = {**answer, "files": [{"path": "app/health.py", "content": "x = 1\n"}]}
    prose["pr_body"] = "Adds health. It is a new endpoint.\n\nCloses #7"
    stream = ProposalStream(issue_number=7, shape=SHAPE)
    stream.feed(json.dumps(prose))
    final = stream.finish("stop", stream.stats)
    assert isinstance(final, InvalidAnswer) and "Summary, Changes, Testing" in final.message
    good = {**prose, "pr_body": GOOD_BODY}
    stream = ProposalStream(issue_number=7, shape=SHAPE)
    stream.feed(json.dumps(good))
    assert isinstance(stream.finish("stop", stream.stats), Finished)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_the_layout_comes_from_git_tracked_files(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    for path in ("app/api/v1/items.py", "tests/test_items.py", "README.md", "build/out.txt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x\n")
    (tmp_path / ".gitignore").write_text("build/\n")
    git(tmp_path, "add", ".")
    dirs, top = tracked_layout(tmp_path)
    assert dirs == ["app", "app/api", "app/api/v1", "tests"]
    assert top == [".gitignore", "README.md"]
    shape = answer_shape(tmp_path, SECTIONS, ["scripts/run.py"])
    assert shape.new_file_dirs == tuple(dirs)
    assert shape.fixed_paths == (".gitignore", "README.md", "scripts/run.py")
    assert answer_shape(tmp_path, SECTIONS, [], "any").new_file_dirs is None
    for i in range(MAX_SHAPE_DIRS + 1):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f.txt").write_text("x\n")
    git(tmp_path, "add", ".")
    assert answer_shape(tmp_path, SECTIONS, []).new_file_dirs is None  # too many: unbounded


def profile_text(sections: str) -> str:
    return f"---\nname: p\npr_body_sections: {sections}\n---\nYou write code.\n"


@pytest.mark.parametrize(
    "sections",
    [
        "[Summary]",
        "[{title: Summary, kind: prose}]",
        "[{title: 'Sum.mary', kind: text}]",
        "[{title: Summary, kind: text}, {title: summary, kind: list}]",
        "{title: Summary, kind: text}",
    ],
)
def test_bad_body_sections_are_refused_with_the_file_named(tmp_path: Path, sections: str) -> None:
    path = tmp_path / "p.md"
    path.write_text(profile_text(sections))
    with pytest.raises(PromptProfileError, match="pr_body_sections"):
        parse_profile(path)


def test_the_bundled_profile_declares_its_sections_and_its_example_follows_them() -> None:
    profile = parse_profile(bundled_prompts_dir() / "backend-dev.md")
    assert profile.body_sections == SECTIONS
    for example in profile.examples:
        shape = AnswerShape(body_sections=profile.body_sections)
        assert issue_rule_errors(example.answer, example.issue.number, shape) == ()


def test_an_example_that_breaks_the_sections_is_refused(tmp_path: Path) -> None:
    bundled = (bundled_prompts_dir() / "backend-dev.md").read_text()
    broken = bundled.replace("      `pytest -q`\n", "      Run it. Then check it.\n")
    assert broken != bundled
    path = tmp_path / "backend-dev.md"
    path.write_text(broken)
    with pytest.raises(PromptProfileError, match="examples"):
        parse_profile(path)


PROMPTS = [
    "Issue #{n}: add a /health endpoint. Write it anywhere.",
    "Issue #{n}: write library/routes/text.py and top.py.",
    "Issue #{n}: describe the change at length, many sentences.",
]
SYSTEM = (
    "Answer with one JSON object, e.g. "
    '{"branch_suffix":"x","commit_message":"feat: x","pr_title":"feat: x",'
    '"pr_body":"Adds x. It is new. It is new.\\n\\nCloses #9",'
    '"files":[{"path":"library/routes/x.py","content":"x\\n"}]}'
)


@pytest.mark.model
@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_the_model_cannot_leave_the_shape(embedded_backend: Any, mode: str) -> None:
    """Whatever the real model writes (greedy or sampled), every path it completes is in the
    shape, and a finished answer passes the shape's rules."""
    for i, prompt in enumerate(PROMPTS):
        number = 200 + i
        sampling = (
            SamplingParams(temperature=0.0)
            if mode == "greedy"
            else SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=5 + i)
        )
        request = GenerationRequest(
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt.format(n=number)},
            ],
            max_tokens=320,
            issue_number=number,
            shape=SHAPE,
        )
        final = list(embedded_backend.generate(request, sampling=sampling))[-1]
        assert isinstance(final, Finished | Truncated | Looping), final
        for path in re.findall(r'"path":"([^"]*)"', final.raw):
            assert re.fullmatch(path_pattern(SHAPE), path), path
        if isinstance(final, Finished):
            proposal = ChangeProposal.model_validate(json.loads(final.raw))
            assert issue_rule_errors(proposal, number, SHAPE) == ()
        elif '"files"' in final.raw:  # the body was closed: it had to match the sections
            body = json.loads(final.raw.split(',"files"')[0] + "}")["pr_body"]
            assert body_ok(body, number), body
