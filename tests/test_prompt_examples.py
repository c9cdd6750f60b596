"""Worked examples in prompt profiles: parsed strictly, checks-clean, counted in the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.context.build import build_context
from engine.context.prompts import load_profile, parse_profile
from engine.context.render import example_messages
from engine.context.result import ContextResult
from engine.core.errors import PromptProfileError
from engine.review.checks.orchestrator import run_checks
from engine.review.checks.registry import enabled_for_profile, has_errors
from tests.conftest import git
from tests.test_context import GemmaCounter, backend_repo, issue, write
from tests.test_context import counter as counter  # noqa: F401 - the fixture


def test_the_shipped_backend_example_is_a_checks_clean_answer(git_repo: Path) -> None:
    """The answer the model imitates passes every check of its own profile, in its own repo."""
    profile = load_profile("backend-dev")
    assert profile.examples, "the Backend Dev Agent ships a worked example"
    for example in profile.examples:
        files: dict[str, str | bytes] = {p: "" for p in example.tree}
        files.update(example.files)
        write(git_repo, files)
        findings = run_checks(
            example.answer,
            git_repo,
            example.issue.number,
            shown_files=set(example.files),
            enabled=enabled_for_profile(profile.checks),
        )
        assert not has_errors(findings), [f.message for f in findings]
        assert [f for f in findings if f.severity == "warning"] == []
        assert example.answer.pr_body.rstrip().endswith(f"Closes #{example.issue.number}")
        git(git_repo, "rm", "-q", "-r", "library", "tests", "requirements.txt")
        git(git_repo, "commit", "-q", "-m", "clean")


def test_the_example_does_not_reuse_the_demo_code() -> None:
    """Nothing of the demo's issues can be copied from the example verbatim."""
    from engine.flow.demo import _FILES as DEMO_FILES
    from engine.flow.demo import DEMO_ISSUES

    example = load_profile("backend-dev").examples[0]
    answer_paths = {f.path for f in example.answer.files}
    assert not answer_paths & set(DEMO_FILES)
    assert example.issue.number not in {number for _f, number, *_rest in DEMO_ISSUES}
    for _file, _number, title, _labels, _body in DEMO_ISSUES:
        assert title.lower() != example.issue.title.lower()


@pytest.mark.parametrize(
    ("examples", "expected"),
    [
        ("examples: 3\n", "'examples' must be a list"),
        ("examples:\n- issue: {number: 1, title: t}\n", "examples[0]: "),
        (
            "examples:\n- issue: {number: 1, title: t}\n  answer: {branch_suffix: a, "
            "commit_message: 'feat: a', pr_title: 'feat: a', pr_body: 'Closes #2', "
            "files: [{path: a.py, content: ''}]}\n",
            "examples[0].answer breaks the rules every answer is held to: pr_body",
        ),
        (
            "examples:\n- issue: {number: 1, title: t}\n  answer: {branch_suffix: a, "
            "commit_message: 'add a', pr_title: 'feat: a', pr_body: 'Closes #1', "
            "files: [{path: a.py, content: ''}]}\n",
            "examples[0].answer breaks the rules every answer is held to: commit_message",
        ),
        ("examples:\n- {issue: {number: 1, title: t}, extra: 1}\n", "must be a mapping of"),
    ],
)
def test_broken_examples_name_the_file_and_the_problem(
    tmp_path: Path, examples: str, expected: str
) -> None:
    path = tmp_path / "mine.md"
    path.write_text(f"---\nname: mine\n{examples}---\nYou write code.\n")
    with pytest.raises(PromptProfileError) as info:
        parse_profile(path)
    assert str(path) in info.value.message
    assert expected in info.value.message


@pytest.mark.model
def test_examples_are_counted_in_the_budget_and_shown_as_their_own_section(
    git_repo: Path, counter: GemmaCounter
) -> None:
    backend_repo(git_repo)
    profile = load_profile("backend-dev", git_repo)

    def build(n_ctx: int, with_examples: bool) -> ContextResult:
        return build_context(
            git_repo,
            issue(),
            profile,
            count_messages=counter.count_messages,
            count_text=counter.count_text,
            n_ctx=n_ctx,
            max_tokens=1024,
            examples=profile.examples if with_examples else (),
        )

    plain = build(8192, False)
    shots = build(8192, True)
    turns = example_messages(profile.examples)
    assert shots.messages[1:3] == turns
    assert [m["role"] for m in shots.messages] == ["system", "user", "assistant", "user"]
    assert shots.total_tokens == counter.count_messages(shots.messages)
    assert shots.example_tokens == sum(counter.count_text(m["content"]) for m in turns)
    assert shots.total_tokens >= plain.total_tokens + shots.example_tokens
    sections = {s.kind: s.tokens for s in shots.sections()}
    assert sections["example"] == shots.example_tokens
    assert "example" not in {s.kind for s in plain.sections()}
    # a tight budget: the example's tokens leave less room for files, never overflow it
    tight = shots.total_tokens - 60  # the files of ``shots`` no longer all fit
    small = build(tight + 1024, True)
    assert small.total_tokens <= small.budget
    assert len(small.shown) < len(shots.shown)
