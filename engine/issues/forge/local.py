"""Local issues: Markdown files with YAML front matter in ``.agent-tui/issues/``.

Why: agent-tui must work without GitHub (offline, private experiments, tests). One issue per
file, any file name ending in ``.md``::

    ---
    number: 12
    title: Add a health endpoint
    labels: [api, good first issue]
    comments:              # optional
      - author: alice
        body: Please also add a test.
        created_at: 2024-05-01T10:00:00Z
    ---
    The body, in Markdown.

Optional keys: ``state`` (``open``/``closed``), ``assignees``, ``milestone``, ``updated_at``.
Unknown keys are errors (a misspelt ``lables`` would otherwise lose the labels silently).
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

from engine.core.errors import IssueFileError, IssueNotFoundError
from engine.core.models import Issue, IssueComment
from engine.issues.forge.base import IssueSource

LOCAL_ISSUES_DIR = Path(".agent-tui") / "issues"
_REQUIRED = ("number", "title")
_OPTIONAL = ("labels", "comments", "state", "assignees", "milestone", "updated_at")
_COMMENT_KEYS = ("author", "body", "created_at")
_HINT = "see 'Local issues' in the README for the format"


def _fail(path: Path, message: str) -> IssueFileError:
    return IssueFileError(f"{path}: {message}", hint=_HINT)


def _datetime(path: Path, key: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):  # YAML reads 2024-05-01 as a date
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise _fail(path, f"'{key}' must be an ISO 8601 date-time (got {value!r})")


def _strings(path: Path, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise _fail(path, f"'{key}' must be a list of strings")
    return [str(v).strip() for v in value if str(v).strip()]


def _comments(path: Path, value: Any) -> list[IssueComment]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(path, "'comments' must be a list of {author, body, created_at}")
    out = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise _fail(path, f"comment {index} must be a mapping with 'author' and 'body'")
        unknown = sorted(str(k) for k in item if k not in _COMMENT_KEYS)
        if unknown:
            raise _fail(
                path,
                f"comment {index}: unknown key(s) {', '.join(map(repr, unknown))} "
                f"(allowed: {', '.join(_COMMENT_KEYS)})",
            )
        body = item.get("body")
        if not isinstance(body, str):
            raise _fail(path, f"comment {index}: 'body' must be a string")
        author = item.get("author", "unknown")
        if not isinstance(author, str | int):
            raise _fail(path, f"comment {index}: 'author' must be a string")
        created = _datetime(path, f"comments[{index}].created_at", item.get("created_at"))
        out.append(IssueComment(author=str(author), body=body.strip(), created_at=created))
    return out


def parse_issue_file(path: Path) -> tuple[Issue, list[IssueComment]]:
    """Read one local issue file.

    Args:
        path: a ``.md`` file with YAML front matter.

    Returns:
        The issue (``source="local"``, ``comments`` = the number of comments) and its
        comments in file order.

    Raises:
        IssueFileError: naming the file and what is wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text") from None
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror}") from None
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise _fail(path, "an issue file starts with a '---' line opening its YAML front matter")
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            break
    else:
        raise _fail(path, "the front matter is not closed by a '---' line")
    import yaml  # here, not at the top: the GitHub-backed first paint never needs it

    try:
        data = yaml.safe_load("".join(lines[1:end]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _fail(path, f"invalid YAML in the front matter{where}: {problem}") from None
    if not isinstance(data, dict):
        raise _fail(path, "the front matter must be a mapping with 'number' and 'title'")
    unknown = sorted(str(k) for k in data if k not in (*_REQUIRED, *_OPTIONAL))
    if unknown:
        raise _fail(
            path,
            f"unknown front matter key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join((*_REQUIRED, *_OPTIONAL))})",
        )
    missing = [k for k in _REQUIRED if data.get(k) is None]
    if missing:
        raise _fail(path, f"missing required key(s): {', '.join(missing)}")
    number = data["number"]
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise _fail(path, f"'number' must be a positive integer (got {number!r})")
    title = data["title"]
    if not isinstance(title, str | int | float) or not str(title).strip():
        raise _fail(path, "'title' must be a non-empty string")
    state = data.get("state", "open")
    if state not in ("open", "closed"):
        raise _fail(path, f"'state' must be 'open' or 'closed' (got {state!r})")
    milestone = data.get("milestone")
    if milestone is not None and not isinstance(milestone, str | int | float):
        raise _fail(path, "'milestone' must be a string")
    comments = _comments(path, data.get("comments"))
    updated = _datetime(path, "updated_at", data.get("updated_at"))
    if updated is None:
        updated = datetime.fromtimestamp(os.stat(path).st_mtime, tz=UTC)
    issue = Issue(
        number=number,
        title=str(title).strip(),
        body="".join(lines[end + 1 :]).strip("\n").rstrip(),
        labels=_strings(path, "labels", data.get("labels")),
        assignees=_strings(path, "assignees", data.get("assignees")),
        milestone=None if milestone is None else str(milestone),
        state=state,
        comments=len(comments),
        updated_at=updated,
        url=path.resolve().as_uri(),
        source="local",
    )
    return issue, comments


class LocalIssueSource(IssueSource):
    """Issues read from ``<repo>/.agent-tui/issues/*.md``, re-read on every call."""

    name: ClassVar[str] = "local"
    REMOTE: ClassVar[bool] = False
    HAS_COMMENTS: ClassVar[bool] = True

    def __init__(self, repo_dir: Path, issues_dir: Path | None = None) -> None:
        """Args:
        repo_dir: the repository (its ``.agent-tui/issues`` is read).
        issues_dir: another directory to read instead (tests, tools).
        """
        self.repo_dir = repo_dir
        self.directory = issues_dir if issues_dir is not None else repo_dir / LOCAL_ISSUES_DIR

    def _read_all(self) -> dict[int, tuple[Issue, list[IssueComment], Path]]:
        found: dict[int, tuple[Issue, list[IssueComment], Path]] = {}
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob("*.md")):
            if not path.is_file():
                continue
            issue, comments = parse_issue_file(path)
            if issue.number in found:
                other = found[issue.number][2]
                raise IssueFileError(
                    f"{path}: issue number {issue.number} is also used by {other}",
                    hint="give every local issue its own number",
                )
            found[issue.number] = (issue, comments, path)
        return found

    def list_issues(self) -> list[Issue]:
        """Open issues, most recently updated first (then highest number).

        Raises:
            IssueFileError: a file is invalid (the message names it).
        """
        issues = [i for i, _c, _p in self._read_all().values() if i.state == "open"]
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(issues, key=lambda i: (i.updated_at or epoch, i.number), reverse=True)

    def get_issue(self, number: int) -> Issue:
        """Issue ``number``, open or closed.

        Raises:
            IssueNotFoundError: no file has that number.
            IssueFileError: a file is invalid.
        """
        return self._entry(number)[0]

    def comments(self, number: int) -> list[IssueComment]:
        """The comments listed in issue ``number``'s front matter.

        Raises:
            IssueNotFoundError: no file has that number.
        """
        return list(self._entry(number)[1])

    def issue_path(self, number: int) -> Path:
        """The file that holds issue ``number``."""
        return self._entry(number)[2]

    def _entry(self, number: int) -> tuple[Issue, list[IssueComment], Path]:
        entries = self._read_all()
        try:
            return entries[number]
        except KeyError:
            known = ", ".join(f"#{n}" for n in sorted(entries)) or "none"
            raise IssueNotFoundError(
                f"no local issue #{number} in {self.directory} (known: {known})",
                hint="add a Markdown file with front matter 'number' and 'title' there",
            ) from None
