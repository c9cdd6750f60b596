"""The persisted context index: a restart reads nothing unchanged, and changes no result.

The index of a large repository is written to the user cache dir, keyed by content (git's
blob ids); a new process loads it instead of reading and tokenising every file again. The
prompt built from it must be exactly the one a first-ever build gives: same files, same
order, same scores, same tokens.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from engine.context import index, persist, snapshot
from engine.context.build import build_context, clear_cache
from engine.context.persist import index_path
from engine.context.prompts import PromptProfile
from engine.context.result import ContextResult
from engine.core.models import Issue
from tests.conftest import git

WORDS = (
    "user account order invoice payment product cart session token health status item price "
    "customer address email report audit shipment refund coupon review rating catalog stock"
).split()
PROFILE = PromptProfile(
    name="t",
    description="",
    checks=(),
    always_include=(),
    system_prompt="You write code.",
    path=Path("t.md"),
    origin="bundled",
)
ISSUES = [
    Issue(number=1, title="Refund totals are wrong", body="`refund_shipment_2` is off by one."),
    Issue(number=2, title="Add a coupon export", body="Export coupons for each customer."),
]


def count_text(text: str) -> int:
    return len(text) // 3 + 1


def count_messages(messages: list[dict[str, str]]) -> int:
    return sum(count_text(m["content"]) + 4 for m in messages)


def make_repo(root: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(n):
        a, b, c = rng.sample(WORDS, 3)
        path = root / f"pkg_{i % 7}" / f"{a}_{b}_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(
            f"def {a}_{c}_{j}({b}_id):\n    return {c}_repo.get_{a}({b}_id) + {j}\n\n"
            for j in range(rng.randint(1, 4))
        )
        path.write_text(f'"""{a.title()} {b} helpers."""\n\n{body}', encoding="utf-8")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "files")


def build(root: Path, issue: Issue) -> ContextResult:
    return build_context(
        root,
        issue,
        PROFILE,
        count_messages=count_messages,
        count_text=count_text,
        n_ctx=3000,
        max_tokens=500,
    )


def outcome(result: ContextResult) -> dict[str, Any]:
    """Everything a build decides (not whether a cache was hit)."""
    data = result.to_dict()
    data.pop("state_key")
    return data


@pytest.fixture
def persist_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persist, "_PERSIST_MIN_FILES", 50)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths read by the index builder (not the candidates' reads for the prompt)."""
    seen: list[str] = []
    original = snapshot._read_doc

    def read_doc(root: str, path: str, content_id: str, max_bytes: int) -> Any:
        seen.append(path)
        return original(root, path, content_id, max_bytes)

    monkeypatch.setattr(snapshot, "_read_doc", read_doc)
    return seen


def restart() -> None:
    """What a new process starts from: no in-memory cache, whatever is on disk."""
    persist.wait_for_index_saves()
    clear_cache()


def forget_disk(root: Path) -> None:
    persist.wait_for_index_saves()
    index_path(root.resolve()).unlink(missing_ok=True)


def test_a_restart_reads_no_unchanged_file_and_builds_the_same_prompt(
    git_repo: Path, persist_small: None, reads: list[str]
) -> None:
    make_repo(git_repo, 300)
    cold = [outcome(build(git_repo, issue)) for issue in ISSUES]
    assert len(reads) >= 300
    restart()
    assert index_path(git_repo.resolve()).is_file()
    reads.clear()
    again = [outcome(build(git_repo, issue)) for issue in ISSUES]
    assert reads == []  # every document came from the persisted index
    assert again == cold
    assert cold[0]["shown"], "the bench issue must show files for the comparison to matter"


def test_a_file_changed_between_runs_is_the_only_one_read(
    git_repo: Path, persist_small: None, reads: list[str]
) -> None:
    make_repo(git_repo, 120)
    build(git_repo, ISSUES[0])
    restart()
    changed = sorted(p for p in (git_repo / "pkg_3").iterdir())[0]
    changed.write_text(changed.read_text() + "\ndef refund_shipment_2():\n    return 2\n")
    reads.clear()
    loaded = outcome(build(git_repo, ISSUES[0]))
    assert reads == [changed.relative_to(git_repo).as_posix()]
    forget_disk(git_repo)
    clear_cache()
    assert outcome(build(git_repo, ISSUES[0])) == loaded  # a first-ever build agrees


def test_an_index_from_another_history_gives_the_same_prompt(
    git_repo: Path, persist_small: None
) -> None:
    """Term ids follow the order terms were first met; scores must not depend on them."""
    make_repo(git_repo, 80, seed=5)  # first state: its words get the low term ids
    build(git_repo, ISSUES[1])
    restart()
    make_repo(git_repo, 200, seed=9)  # a later state, indexed on top of the old vocabulary
    from_history = [outcome(build(git_repo, issue)) for issue in ISSUES]
    forget_disk(git_repo)
    clear_cache()
    fresh = [outcome(build(git_repo, issue)) for issue in ISSUES]
    assert from_history == fresh


def test_a_stale_or_broken_index_is_ignored(
    git_repo: Path, persist_small: None, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_repo(git_repo, 60)
    first = outcome(build(git_repo, ISSUES[0]))
    restart()
    monkeypatch.setattr(persist, "_index_version", lambda: "another-tokenizer")
    reads.clear()
    assert outcome(build(git_repo, ISSUES[0])) == first
    assert len(reads) >= 60  # a tokenizer change re-reads everything
    restart()
    index_path(git_repo.resolve()).write_bytes(b"not an index")
    clear_cache()
    assert outcome(build(git_repo, ISSUES[0])) == first


def test_small_repositories_are_not_persisted(git_repo: Path) -> None:
    make_repo(git_repo, 20)
    build(git_repo, ISSUES[0])
    persist.wait_for_index_saves()
    assert not index_path(git_repo.resolve()).exists()


def test_batch_indexing_counts_the_same_terms_as_one_text_at_a_time() -> None:
    rng = random.Random(3)
    words = [*WORDS, "refund_shipment_2", "HTTPServer", "getUserID", "the", "x", "__init__"]
    texts = ["", "   ", *(" ".join(rng.choices(words, k=rng.randint(1, 60))) for _ in range(200))]
    one, batch = index._Vectorizer(), index._Vectorizer()
    expected = [dict(zip(*one(text), strict=True)) for text in texts]
    got = [dict(zip(t, f, strict=True)) for t, f in batch.many(texts)]
    # term ids are numbered in the order terms are met: compare through the term texts
    names_one = {i: term for term, i in one.vocab.items()}
    names_batch = {i: term for term, i in batch.vocab.items()}
    assert [{names_batch[t]: n for t, n in d.items()} for d in got] == [
        {names_one[t]: n for t, n in d.items()} for d in expected
    ]
