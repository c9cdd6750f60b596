"""Outlines: a Python file too large for the budget is shown as its signatures, never taken
for the file itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.context.outline import python_outline
from engine.context.result import REASON_BUDGET, REASON_SECRET, ContextOptions, ContextResult
from tests.test_context import TINY_PROFILE, GemmaCounter, build, issue, write
from tests.test_context import counter as counter  # noqa: F401 - the fixture

MODELS = '''"""User models."""

from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

DEFAULT_ROLE = "member"


class User(Base):
    """A person who can sign in."""

    __tablename__ = "users"

    email: Mapped[str] = mapped_column(unique=True)
    full_name: Mapped[str]

    @property
    def display_name(self) -> str:
        """The name to show."""
        if self.full_name:
            return self.full_name
        return self.email.split("@")[0]

    async def touch(self, when: datetime | None = None) -> None:
        import time

        self.updated = when or time.time()


def find_user(db, email: str, *, active: bool = True) -> User | None:
    """One user by e-mail."""
    for user in db.query(User).all():
        if user.email == email and user.active == active:
            return user
    return None
'''


def test_an_outline_keeps_the_shape_and_drops_the_code() -> None:
    outline = python_outline(MODELS)
    assert outline is not None
    lines = outline.splitlines()
    assert lines == [
        "from datetime import datetime  # line 3",
        "from sqlalchemy.orm import Mapped, mapped_column  # line 5",
        "from app.models.base import Base  # line 7",
        "DEFAULT_ROLE = 'member'  # line 9",
        "class User(Base):  # line 12",
        "    __tablename__ = 'users'  # line 15",
        "    email: Mapped[str] = mapped_column(unique=True)  # line 17",
        "    full_name: Mapped[str]  # line 18",
        "    @property  # line 20",
        "    def display_name(self) -> str: ...  # line 21",
        "    async def touch(self, when: datetime | None=None) -> None: ...  # line 27",
        "def find_user(db, email: str, *, active: bool=True) -> User | None: ...  # line 33",
    ]
    assert "return" not in outline and "import time" not in outline  # bodies stay out


@pytest.mark.parametrize("text", ["def broken(:\n", "", "# only a comment\n", "x.y = 1\n"])
def test_no_outline_for_what_does_not_parse_or_holds_nothing(text: str) -> None:
    assert python_outline(text) is None


def _repo(git_repo: Path, extra: dict[str, str | bytes] | None = None) -> None:
    files: dict[str, str | bytes] = {
        ".agent-tui/prompts/tiny.md": TINY_PROFILE,
        "app/main.py": "from fastapi import FastAPI\n\napp = FastAPI()\n",
        # large: about 2,000 tokens whole, a few dozen as an outline
        "app/models/user.py": MODELS
        + "".join(
            f"\n\ndef helper_{i}(x):\n" + "    x += 1\n" * 20 + "    return x\n" for i in range(12)
        ),
        "app/README.md": "# app\n" + "Words about the app. " * 400,
    }
    write(git_repo, {**files, **(extra or {})})


def _build(git_repo: Path, counter: GemmaCounter, **kw: object) -> ContextResult:
    the_issue = issue(title="Users need a display name", body="Use `User` in `find_user`.")
    return build(git_repo, counter, the_issue, n_ctx=1700, max_tokens=512, **kw)  # type: ignore[arg-type]


@pytest.mark.model
def test_a_file_too_large_is_shown_as_its_outline_and_not_counted_as_seen(
    git_repo: Path, counter: GemmaCounter
) -> None:
    _repo(git_repo)
    result = _build(git_repo, counter)
    shown = {f.path: f for f in result.shown}
    assert shown["app/models/user.py"].outline
    assert "app/models/user.py" not in result.shown_files  # the checks still call it unseen
    prompt = result.messages[-1]["content"]
    assert "## Outlines of files too large to show" in prompt
    assert "def find_user(db, email: str, *, active: bool=True) -> User | None: ..." in prompt
    assert "x += 1" not in prompt  # no body
    assert prompt.index("## Files shown in full") < prompt.index("## Outlines")
    # only Python has outlines: the README is left out whole, as before
    assert "app/README.md" not in shown
    assert counter.count_messages(result.messages) == result.total_tokens <= result.budget
    # the outlines' heading is paid for when the first outline is taken, so the final count
    # never has to drop a file that was chosen
    assert not [x for x in result.left_out if x.detail.startswith("dropped to fit")]

    off = _build(git_repo, counter, options=ContextOptions(outlines=False))
    assert "app/models/user.py" not in {f.path for f in off.shown}
    assert any(x.path == "app/models/user.py" and x.reason == REASON_BUDGET for x in off.left_out)
    assert "## Outlines" not in off.messages[-1]["content"]


@pytest.mark.model
def test_a_file_the_secret_scan_flags_gets_no_outline_either(
    git_repo: Path, counter: GemmaCounter
) -> None:
    key = "AKIA" + "Z7QF3XK2M5N8P4R6"
    _repo(
        git_repo, {"app/models/user.py": MODELS.replace('"member"', f'"{key}"') + "\n# pad\n" * 600}
    )
    result = _build(git_repo, counter)
    assert "app/models/user.py" not in {f.path for f in result.shown}
    assert any(
        x.path == "app/models/user.py" and x.reason == REASON_SECRET for x in result.left_out
    )
    assert key not in "\n".join(m["content"] for m in result.messages)


@pytest.mark.model
def test_no_budget_has_to_drop_a_chosen_file_for_the_outlines_heading(
    git_repo: Path, counter: GemmaCounter
) -> None:
    """At every budget around the one where the outline only just fits, the heading of the
    outlines' section is counted with the first outline: the final count never finds the
    prompt too large and drops a file that was chosen."""
    _repo(git_repo)
    the_issue = issue(title="Users need a display name", body="Use `User` in `find_user`.")
    outlined = 0
    for n_ctx in range(1400, 2400, 9):
        result = build(git_repo, counter, the_issue, n_ctx=n_ctx, max_tokens=512)
        assert not [x for x in result.left_out if x.detail.startswith("dropped to fit")], n_ctx
        outlined += any(f.outline for f in result.shown)
    assert outlined  # the sweep does cross budgets with an outline
