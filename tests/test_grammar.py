"""The proposal grammar: built loudly, compact, and as strict as the pydantic model.

The grammar and ``ChangeProposal`` must agree: every JSON text the grammar accepts validates,
and what the model refuses the grammar cannot produce. Checked here with llguidance's matcher
over the embedded model's real tokenizer.
"""

from __future__ import annotations

import json
import time
from typing import Any

import llguidance
import pytest
from pydantic import ValidationError

from engine.core.models import DEFAULT_MAX_FILES, ChangeProposal, proposal_json_schema
from engine.generate.grammar import (
    COMPACT_JSON,
    GrammarError,
    build_grammar,
    forced_prefix,
    new_matcher,
    proposal_grammar,
    tokenizer_for,
)

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tokenizer(embedded_backend: Any) -> Any:
    return embedded_backend.load().tokenizer()


def accepts(tokenizer: Any, grammar: str, text: str) -> bool:
    """Whether the grammar accepts ``text`` as a complete answer."""
    matcher = new_matcher(tokenizer, grammar)
    tokens = tokenizer.tokenize_str(text)
    if matcher.validate_tokens(tokens) != len(tokens):
        return False
    matcher.consume_tokens(tokens)
    return bool(matcher.is_accepting())


def proposal(**changes: Any) -> dict[str, Any]:
    if "files" in changes:
        changes["files"] = [{**f, "content": f.get("content", "")} for f in changes["files"]]
    base: dict[str, Any] = {
        "branch_suffix": "add-health",
        "commit_message": "feat: add health endpoint",
        "pr_title": "Add health endpoint",
        "pr_body": "Adds GET /health.\n\nCloses #12",
        "files": [{"path": "app/api/health.py", "content": "def health():\n    return 1\n"}],
    }
    base.update(changes)
    return base


def compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def pydantic_ok(data: dict[str, Any]) -> bool:
    """What the final validation accepts: the model, then the (default) configured file limit."""
    try:
        proposal = ChangeProposal.model_validate(data)
    except ValidationError:
        return False
    return len(proposal.files) <= DEFAULT_MAX_FILES


CASES: list[tuple[str, dict[str, Any]]] = [
    ("valid", proposal()),
    ("branch 30 chars", proposal(branch_suffix="a" * 30)),
    ("branch 31 chars", proposal(branch_suffix="a" * 31)),
    ("branch uppercase", proposal(branch_suffix="Add-health")),
    ("branch trailing dash", proposal(branch_suffix="add-")),
    ("branch with slash", proposal(branch_suffix="feat/x")),
    ("commit 120 chars", proposal(commit_message="x" * 120)),
    ("commit 121 chars", proposal(commit_message="x" * 121)),
    ("empty commit", proposal(commit_message="")),
    ("title 121 chars", proposal(pr_title="t" * 121)),
    ("empty title", proposal(pr_title="")),
    ("no files", proposal(files=[])),
    ("twelve files", proposal(files=[{"path": f"f{i}.py", "content": ""} for i in range(12)])),
    ("thirteen files", proposal(files=[{"path": f"f{i}.py", "content": ""} for i in range(13)])),
    ("path parent", proposal(files=[{"path": "../etc/passwd", "content": "x"}])),
    ("path absolute", proposal(files=[{"path": "/etc/passwd", "content": "x"}])),
    ("path dot segment", proposal(files=[{"path": "./app.py", "content": "x"}])),
    ("path double slash", proposal(files=[{"path": "app//x.py", "content": "x"}])),
    ("path backslash", proposal(files=[{"path": "app\\x.py", "content": "x"}])),
    ("path space", proposal(files=[{"path": "my app.py", "content": "x"}])),
    ("path hidden dir", proposal(files=[{"path": ".github/workflows/ci.yml", "content": "x"}])),
    ("path 200 chars", proposal(files=[{"path": "/".join(["a" * 40] * 4 + ["b" * 36])}])),
    ("path 201 chars", proposal(files=[{"path": "/".join(["a" * 40] * 4 + ["b" * 37])}])),
    ("long content", proposal(files=[{"path": "big.py", "content": "x = 1\n" * 1500}])),
    ("unicode content", proposal(files=[{"path": "é.md", "content": "héllo ✓"}])),
    ("extra key", {**proposal(), "extra": 1}),
    ("missing files", {k: v for k, v in proposal().items() if k != "files"}),
    ("file extra key", proposal(files=[{"path": "a.py", "content": "", "mode": "x"}])),
]


@pytest.mark.parametrize(("label", "data"), CASES, ids=[c[0] for c in CASES])
def test_grammar_and_pydantic_agree(tokenizer: Any, label: str, data: dict[str, Any]) -> None:
    grammar = proposal_grammar()
    assert accepts(tokenizer, grammar, compact(data)) == pydantic_ok(data), label


def test_expected_verdicts(tokenizer: Any) -> None:
    """Not only agreement: the bounds are really there."""
    grammar = proposal_grammar()
    verdicts = {label: accepts(tokenizer, grammar, compact(data)) for label, data in CASES}
    assert verdicts["valid"] and verdicts["long content"] and verdicts["path hidden dir"]
    assert verdicts["branch 30 chars"] and not verdicts["branch 31 chars"]
    assert verdicts["commit 120 chars"] and not verdicts["commit 121 chars"]
    assert verdicts["twelve files"] and not verdicts["thirteen files"]
    assert verdicts["path 200 chars"] and not verdicts["path 201 chars"]
    for bad in ("no files", "path parent", "path absolute", "path dot segment", "extra key"):
        assert not verdicts[bad], bad


def test_max_files_is_configurable(tokenizer: Any) -> None:
    two = build_grammar(proposal_json_schema(2))
    files = [{"path": f"f{i}.py", "content": ""} for i in range(3)]
    assert accepts(tokenizer, two, compact(proposal(files=files[:2])))
    assert not accepts(tokenizer, two, compact(proposal(files=files)))


def test_grammar_is_compact_json(tokenizer: Any) -> None:
    grammar = proposal_grammar()
    assert accepts(tokenizer, grammar, compact(proposal()))
    spaced = json.dumps(proposal(), separators=(", ", ": "))
    assert not accepts(tokenizer, grammar, spaced)
    assert not accepts(tokenizer, grammar, json.dumps(proposal(), indent=2))
    # a raw newline inside a string is not JSON: the grammar makes the model escape it
    raw_newline = compact(proposal()).replace("\\n", "\n")
    assert not accepts(tokenizer, grammar, raw_newline)


def test_every_answer_starts_with_the_forced_prefix(tokenizer: Any) -> None:
    matcher = new_matcher(tokenizer, proposal_grammar())
    forced = tokenizer.decode_str(matcher.compute_ff_tokens())
    assert forced == forced_prefix() == '{"branch_suffix":"'


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "no-such-format"}, "format"),
        ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
        ({"type": "strnig"}, "strnig"),
        ({**proposal_json_schema(), "if": {"type": "object"}}, '"if"'),
    ],
)
def test_build_errors_and_ignored_keywords_fail_loudly(schema: dict[str, Any], needle: str) -> None:
    with pytest.raises(GrammarError) as info:
        build_grammar(schema)
    assert needle in info.value.message
    assert info.value.hint


def test_lenient_mode_is_never_used() -> None:
    assert COMPACT_JSON["lenient"] is False
    assert COMPACT_JSON["whitespace_flexible"] is False


def test_the_stock_converter_accepts_the_schema_too() -> None:
    """Other backends (Ollama, llama-server) convert the same schema with llama.cpp's GBNF
    converter: its regexes must stay within what that converter supports."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(proposal_json_schema()))
    assert "branch-suffix" in gbnf and '\\."' not in gbnf


def test_tokenizer_is_built_once_per_model(embedded_backend: Any) -> None:
    model = embedded_backend.load()
    first = model.tokenizer()
    t0 = time.perf_counter()
    again = tokenizer_for(model.model_key, model.vocab, model.n_vocab)
    assert again is first
    assert time.perf_counter() - t0 < 0.1
    assert isinstance(first, llguidance.LLTokenizer)
    assert first.vocab_size == model.n_vocab


# ------------------------------------------------------------------------------------------
# The per-issue schema: Closes #N and conventional subjects are the grammar's, not a check's

ISSUE = 12

ISSUE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("valid", proposal(pr_title="feat: add health endpoint")),
    ("scoped subjects", proposal(commit_message="fix(api): x", pr_title="test(health): y")),
    ("only the closing line", proposal(pr_title="feat: x", pr_body="Closes #12")),
    (
        "markdown headings",
        proposal(pr_title="feat: x", pr_body="## Summary\nAdds x.\n\nCloses #12"),
    ),
    ("title not conventional", proposal()),
    ("commit not conventional", proposal(commit_message="Add health", pr_title="feat: x")),
    ("unknown type", proposal(commit_message="wip: x", pr_title="feat: x")),
    ("no space after colon", proposal(commit_message="feat:x", pr_title="feat: x")),
    ("multi-line commit", proposal(commit_message="feat: x\n\nbody", pr_title="feat: x")),
    # type, scope and ": " take at most 32 characters; the subject 88: 120 in all
    (
        "commit 120 chars",
        proposal(commit_message=f"refactor({'s' * 20}): " + "x" * 88, pr_title="feat: x"),
    ),
    ("subject 89 chars", proposal(commit_message="feat: " + "x" * 89, pr_title="feat: x")),
    ("final newline", proposal(pr_title="feat: x", pr_body="Adds x.\n\nCloses #12.\n")),
    ("no closes", proposal(pr_title="feat: x", pr_body="Adds GET /health.")),
    ("glued closes", proposal(pr_title="feat: x", pr_body="Adds a test_Closes #12")),
    ("other issue", proposal(pr_title="feat: x", pr_body="Closes #1")),
    ("longer number", proposal(pr_title="feat: x", pr_body="Closes #123")),
    ("closes not last", proposal(pr_title="feat: x", pr_body="Closes #12\n\nMore text.")),
    ("two issues", proposal(pr_title="feat: x", pr_body="See #3.\n\nCloses #12")),
    ("lowercase closes", proposal(pr_title="feat: x", pr_body="closes #12")),
]


def per_issue_ok(data: dict[str, Any]) -> bool:
    """What the final validation of a generation for issue ``ISSUE`` accepts."""
    from engine.core.models import issue_rule_errors

    if not pydantic_ok(data):
        return False
    return not issue_rule_errors(ChangeProposal.model_validate(data), ISSUE)


@pytest.mark.parametrize(("label", "data"), ISSUE_CASES, ids=[c[0] for c in ISSUE_CASES])
def test_per_issue_grammar_and_final_validation_agree(
    tokenizer: Any, label: str, data: dict[str, Any]
) -> None:
    grammar = proposal_grammar(issue_number=ISSUE)
    assert accepts(tokenizer, grammar, compact(data)) == per_issue_ok(data), label


def test_per_issue_expected_verdicts(tokenizer: Any) -> None:
    grammar = proposal_grammar(issue_number=ISSUE)
    verdicts = {label: accepts(tokenizer, grammar, compact(d)) for label, d in ISSUE_CASES}
    for good in (
        "valid",
        "scoped subjects",
        "only the closing line",
        "markdown headings",
        "final newline",
    ):
        assert verdicts[good], good
    assert verdicts["commit 120 chars"] and not verdicts["subject 89 chars"]
    for bad in (
        "title not conventional",
        "commit not conventional",
        "unknown type",
        "no space after colon",
        "no closes",
        "glued closes",
        "other issue",
        "longer number",
        "closes not last",
        "two issues",
    ):
        assert not verdicts[bad], bad


def test_per_issue_grammar_needs_no_tokenizer_rebuild(embedded_backend: Any) -> None:
    """A new issue's grammar compiles against the cached tokenizer in milliseconds."""
    model = embedded_backend.load()
    tokenizer = model.tokenizer()
    t0 = time.perf_counter()
    for number in range(1000, 1010):
        new_matcher(model.tokenizer(), proposal_grammar(issue_number=number))
    per_issue = (time.perf_counter() - t0) / 10
    assert model.tokenizer() is tokenizer
    assert per_issue < 0.25, f"{per_issue * 1000:.0f} ms per issue grammar"
