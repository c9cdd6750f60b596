"""Any proposal goes through the Generating, Preview and Publish plan screens without an error.

A model's answer is untrusted: the same path twice (which crashed the Preview with
``DuplicateID``), paths that differ only in case, empty and huge files, markup and control
characters, a hundred files. Hypothesis draws such proposals; each one is streamed into the
Generating screen, stopped, then reviewed in the Preview (every file highlighted, one dropped)
and planned in the publish plan, and no screen may raise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.config import load_config
from engine.core.errors import AgentTuiError
from engine.core.events import Cancelled
from engine.core.models import ChangeProposal, FileChange
from engine.flow.demo import create_demo
from engine.issues.forge.local import LocalIssueSource
from tui.app import AgentTuiApp
from tui.messages import ProposalReady, ProposalStreamed
from tui.screens.generating import GeneratingScreen
from tui.screens.preview import PreviewScreen
from tui.screens.publish_plan import PublishPlanScreen
from tui.widgets.file_list import FileList

SEGMENT = st.text(alphabet="abcABCxyz_-.09", min_size=1, max_size=12).filter(
    lambda s: s[0] not in "-." and s not in (".", "..")
)
ODD = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30
)
PATHS = st.one_of(
    st.lists(SEGMENT, min_size=1, max_size=6).map("/".join),
    st.sampled_from(["app/main.py", "APP/Main.py", "app/MAIN.py", "[bold]x[/].py", "a b/ç.py"]),
    ODD,
)
CONTENT = st.one_of(
    st.just(""),
    st.text(max_size=200),
    # a large file (a model answer is bounded by its token budget: a few thousand lines)
    st.integers(min_value=200, max_value=600).map(lambda n: "x = 1\n" * n),
)


@st.composite
def proposals(draw: Any) -> ChangeProposal:
    """A proposal as a model (or an edit) can leave it: not necessarily valid."""
    paths = draw(st.lists(PATHS, min_size=0, max_size=12))
    if draw(st.booleans()) and paths:
        paths += [paths[0]] * draw(st.integers(1, 3))  # the same path again
    if draw(st.integers(0, 9)) == 0:
        paths = [f"pkg/m{i}.py" for i in range(100)]  # a hundred files
    files = [FileChange.model_construct(path=p, content=draw(CONTENT)) for p in paths]
    return ChangeProposal.model_construct(
        branch_suffix=draw(st.sampled_from(["fix", "Not Valid!", "x" * 40, ""])),
        commit_message=draw(st.text(max_size=60)),
        pr_title=draw(st.text(max_size=60)),
        pr_body=draw(st.sampled_from(["Closes #1", "", "[red]markup[/red]\x1b[31m"])),
        files=files,
    )


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_demo(tmp_path_factory.mktemp("prop") / "demo").repo


async def settle(pilot: Any) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def walk(repo: Path, proposal: ChangeProposal, size: tuple[int, int]) -> None:
    app = AgentTuiApp(repo, load_config(repo), source=LocalIssueSource(repo))
    errors: list[BaseException] = []
    app.show_error = errors.append  # type: ignore[method-assign]
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        run = app.workspace.start(app.workspace.issue_source().get_issue(1), comments=[])
        data = proposal.model_dump(warnings=False)
        generating = GeneratingScreen(run, start=False)
        await app.push_screen(generating)
        generating.post_message(ProposalStreamed(data, "{", 10, 1.0, 1.0, 0.1))
        await settle(pilot)
        generating.show_failure(Cancelled(message="cancelled", partial=data))
        await settle(pilot)
        run.review = run._review(proposal)
        generating.post_message(ProposalReady(run.review))
        await settle(pilot)
        preview = app.screen
        assert isinstance(preview, PreviewScreen)
        files = preview.query_one(FileList)
        assert len(files.paths) == len(proposal.files)
        for _ in range(min(len(proposal.files), 12)):
            await pilot.press("down")
        if proposal.files:
            await pilot.press("d")
            await settle(pilot)
            assert files.current_path is None or files.current_path in files.paths
        await pilot.press("p")
        await settle(pilot)
        plan = app.screen
        assert isinstance(plan, PublishPlanScreen)
        assert plan.state in ("ready", "blocked"), plan.state
        await pilot.press("escape")
        await settle(pilot)
    # an unexpected exception inside the app ends run_test with it; expected failures
    # (an engine error shown by the error modal) are allowed, bugs are not
    assert all(isinstance(e, AgentTuiError) for e in errors), errors


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(proposal=proposals(), size=st.sampled_from([(80, 24), (100, 30), (160, 48)]))
def test_any_proposal_goes_through_every_screen(
    demo_repo: Path, proposal: ChangeProposal, size: tuple[int, int]
) -> None:
    asyncio.run(walk(demo_repo, proposal, size))


def test_the_same_path_twice_is_listed_twice(demo_repo: Path) -> None:
    """The defect found on a real repository: one path twice killed the Preview."""
    twice = ChangeProposal(
        branch_suffix="items-search",
        commit_message="feat: search items by title",
        pr_title="feat: search items by title",
        pr_body="Closes #1",
        files=[
            FileChange(path="app/api/v1/endpoints/items.py", content="a = 1\n"),
            FileChange(path="app/api/v1/endpoints/items.py", content="a = 2\n"),
        ],
    )
    asyncio.run(walk(demo_repo, twice, (100, 30)))
