"""Local Markdown issues in ``.agent-tui/issues/``."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.core.errors import IssueFileError, IssueNotFoundError
from engine.issues.forge.base import IssueSource
from engine.issues.forge.local import LocalIssueSource, parse_issue_file


def put(repo: Path, name: str, text: str) -> Path:
    directory = repo / ".agent-tui" / "issues"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


HEALTH = """---
number: 12
title: Add a health endpoint
labels: [api, good first issue]
comments:
  - author: alice
    body: Please also add a test.
    created_at: 2024-05-01T10:00:00Z
  - author: bob
    body: |
      And document it.
---
Add `GET /health` returning `{"status": "ok"}`.

It must not need a database.
"""


def test_reads_issues_and_comments(tmp_path: Path) -> None:
    put(tmp_path, "12-health.md", HEALTH)
    put(tmp_path, "3.md", "---\nnumber: 3\ntitle: Old one\nupdated_at: 2020-01-01\n---\n")
    put(tmp_path, "4.md", "---\nnumber: 4\ntitle: Done\nstate: closed\n---\nbody\n")
    (tmp_path / ".agent-tui" / "issues" / "notes.txt").write_text("not an issue")
    source = LocalIssueSource(tmp_path)
    assert isinstance(source, IssueSource) and source.HAS_COMMENTS and not source.REMOTE

    issues = source.list_issues()
    assert [i.number for i in issues] == [12, 3]  # open only, most recently updated first
    health = source.get_issue(12)
    assert health.title == "Add a health endpoint"
    assert health.labels == ["api", "good first issue"]
    assert (
        health.body
        == 'Add `GET /health` returning `{"status": "ok"}`.\n\nIt must not need a database.'
    )
    assert health.comments == 2 and health.source == "local" and health.state == "open"
    comments = source.comments(12)
    assert [c.author for c in comments] == ["alice", "bob"]
    assert comments[0].created_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert comments[1].body == "And document it."
    assert source.get_issue(4).state == "closed"  # closed issues can still be read
    assert source.get_issue(3).body == "" and source.comments(3) == []
    assert source.issue_path(12).name == "12-health.md"
    assert source.refresh().total == 2


def test_no_issue_directory_means_no_issues(tmp_path: Path) -> None:
    source = LocalIssueSource(tmp_path)
    assert source.list_issues() == []
    with pytest.raises(IssueNotFoundError) as exc:
        source.get_issue(1)
    assert "#1" in exc.value.message and exc.value.hint


def test_unknown_number_lists_the_known_ones(tmp_path: Path) -> None:
    put(tmp_path, "a.md", "---\nnumber: 2\ntitle: Two\n---\n")
    with pytest.raises(IssueNotFoundError) as exc:
        LocalIssueSource(tmp_path).get_issue(9)
    assert "known: #2" in exc.value.message


def test_updated_at_defaults_to_the_file_time(tmp_path: Path) -> None:
    older = put(tmp_path, "a.md", "---\nnumber: 1\ntitle: older\n---\n")
    put(tmp_path, "b.md", "---\nnumber: 2\ntitle: newer\n---\n")
    os.utime(older, (1_000_000, 1_000_000))
    assert [i.number for i in LocalIssueSource(tmp_path).list_issues()] == [2, 1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("number: 1\ntitle: no front matter\n", "starts with a '---' line"),
        ("---\nnumber: 1\ntitle: unclosed\n", "not closed"),
        ("---\nnumber: 1\ntitle: a: b\n---\n", "invalid YAML in the front matter (line 3)"),
        ("---\ntitle: no number\n---\n", "missing required key(s): number"),
        ("---\nnumber: 1\n---\n", "missing required key(s): title"),
        ("---\nnumber: one\ntitle: t\n---\n", "'number' must be a positive integer"),
        ("---\nnumber: 0\ntitle: t\n---\n", "'number' must be a positive integer"),
        ("---\nnumber: 1\ntitle: t\nlables: [x]\n---\n", "unknown front matter key(s) 'lables'"),
        ("---\nnumber: 1\ntitle: t\nlabels: {a: 1}\n---\n", "'labels' must be a list"),
        ("---\nnumber: 1\ntitle: t\nstate: done\n---\n", "'state' must be 'open' or 'closed'"),
        ("---\nnumber: 1\ntitle: t\ncomments: hi\n---\n", "'comments' must be a list"),
        ("---\nnumber: 1\ntitle: t\ncomments: [{author: a}]\n---\n", "comment 1: 'body'"),
        ("---\nnumber: 1\ntitle: t\ncomments: [{body: b, by: x}]\n---\n", "unknown key(s) 'by'"),
        ("---\nnumber: 1\ntitle: t\nupdated_at: soon\n---\n", "ISO 8601"),
        ("---\n- 1\n---\n", "must be a mapping"),
    ],
)
def test_bad_issue_files_are_clear_errors_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = put(tmp_path, "bad.md", text)
    with pytest.raises(IssueFileError) as exc:
        parse_issue_file(path)
    assert str(path) in exc.value.message and expected in exc.value.message
    assert exc.value.hint
    with pytest.raises(IssueFileError):
        LocalIssueSource(tmp_path).list_issues()


def test_duplicate_numbers_name_both_files(tmp_path: Path) -> None:
    first = put(tmp_path, "a.md", "---\nnumber: 5\ntitle: A\n---\n")
    second = put(tmp_path, "b.md", "---\nnumber: 5\ntitle: B\n---\n")
    with pytest.raises(IssueFileError) as exc:
        LocalIssueSource(tmp_path).list_issues()
    assert str(first) in exc.value.message and str(second) in exc.value.message


def test_non_utf8_issue_file(tmp_path: Path) -> None:
    path = tmp_path / ".agent-tui" / "issues" / "latin.md"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"---\nnumber: 1\ntitle: caf\xe9\n---\n")
    with pytest.raises(IssueFileError, match="not UTF-8"):
        LocalIssueSource(tmp_path).get_issue(1)
