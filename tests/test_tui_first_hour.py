"""The first hour of a real user (issue 16): nothing lost across a restart, a history that
records what was published, and messages that say what happened and what to do next.

No model runs here: proposals are recorded in the history the way a generation records
them, on the demo repository (a bare ``origin``, no GitHub: a publish pushes and queues its
pull request in the outbox).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import Static

from engine.cli import main
from engine.cli.exitcodes import QUEUED
from engine.core.config import load_config
from engine.core.events import Cancelled
from engine.core.models import ChangeProposal, FileChange
from engine.flow.demo import create_demo
from engine.flow.issue_run import IssueRun
from engine.flow.session import Workspace
from engine.issues.forge.local import LocalIssueSource
from engine.publish.store import Store
from tui.app import AgentTuiApp
from tui.screens.generating import GeneratingScreen
from tui.screens.issue import IssueScreen
from tui.screens.issues import IssuesScreen
from tui.screens.preview import PreviewScreen
from tui.screens.publish_plan import PublishPlanScreen
from tui.widgets.file_list import FileList
from tui.widgets.issue_table import IssueTable

PROPOSAL = ChangeProposal(
    branch_suffix="add-notes",
    commit_message="docs: add notes",
    pr_title="docs: add notes",
    pr_body="Adds notes.\n\nCloses #1\n",
    files=[FileChange(path="docs/notes.md", content="# Notes\n")],
)
EDITED = "# Notes\n\nEdited by the user.\n"


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    return create_demo(tmp_path / "demo").repo


def workspace(repo: Path) -> Workspace:
    return Workspace(repo, load_config(repo), source=LocalIssueSource(repo))


def generated(ws: Workspace, number: int = 1) -> IssueRun:
    """A run holding ``PROPOSAL``, recorded in the history as a generation records it."""
    run = ws.start(ws.issue_source().get_issue(number), comments=[])
    run.review = run._review(PROPOSAL, messages=[{"role": "user", "content": "x"}])
    assert run.review.generation_id is not None
    return run


def plain(renderable: Any, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(renderable)
    return console.export_text()


def shown(widget: Any) -> str:
    assert isinstance(widget, Static)
    return plain(widget.content)


async def settle(pilot: Any) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


# -- 2. nothing lost across a restart ------------------------------------------------------


def test_edits_are_saved_as_they_are_made(demo_repo: Path) -> None:
    run = generated(workspace(demo_repo))
    run.edit_file("docs/notes.md", EDITED)
    # no publish, no clean exit: the edit is already in the history, next to the original
    record = Store.for_repo(demo_repo).generation(run.review.generation_id)  # type: ignore[union-attr, arg-type]
    assert record is not None
    assert record.proposal == PROPOSAL.model_dump()
    assert record.edited is not None and record.edited["files"][0]["content"] == EDITED
    # a new process brings back the edited proposal, checked again
    again = workspace(demo_repo).restore(run.issue)
    assert again is not None and again.review is not None
    assert again.review.proposal.files[0].content == EDITED
    assert again.review.generation_id == record.id


async def test_reopening_the_app_brings_back_the_proposal(demo_repo: Path) -> None:
    run = generated(workspace(demo_repo))
    run.edit_file("docs/notes.md", EDITED)
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(IssueTable)
        # the issue list says where each issue stands
        assert table.state_of(1) == "proposal"
        assert table.state_of(2) == ""
        table.cursor = [i.number for i in table.visible_issues()].index(1)
        await pilot.press("enter")
        await settle(pilot)
        issue = app.screen
        assert isinstance(issue, IssueScreen)
        assert "v opens it" in shown(issue.query_one("#issue-proposal"))
        await pilot.press("v")
        await settle(pilot)
        preview = app.screen
        assert isinstance(preview, PreviewScreen)
        assert preview.review.proposal.files[0].content == EDITED
        assert preview.query_one(FileList).paths == ["docs/notes.md"]


async def test_the_issue_list_shows_a_queued_publish(demo_repo: Path) -> None:
    ws = workspace(demo_repo)
    run = generated(ws)
    run.acknowledge()
    result = run.publish(run.plan_publish())  # no GitHub: pushed, the PR waits in the outbox
    assert result.queued
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.screen.query_one(IssueTable).state_of(1) == "queued"


# -- 3. the history records what was published ----------------------------------------------


def test_a_publish_records_the_edited_proposal_and_keeps_the_original(demo_repo: Path) -> None:
    run = generated(workspace(demo_repo))
    run.edit_file("docs/notes.md", EDITED)
    run.acknowledge()
    result = run.publish(run.plan_publish())
    assert result.queued
    record = Store.for_repo(demo_repo).generation(result_generation(demo_repo, result.job_id))
    assert record is not None and record.outcome == "queued"
    assert record.proposal == PROPOSAL.model_dump()  # the model's original
    assert record.edited is not None  # ... and what was published: the edit, "Closes #1" added
    assert record.edited["files"][0]["content"] == EDITED
    assert record.edited["pr_body"].rstrip().endswith("Closes #1")
    assert record.issue_title == run.issue.title


def result_generation(repo: Path, job_id: int) -> int:
    job = Store.for_repo(repo).job(job_id)
    assert job is not None and job.generation_id is not None
    return job.generation_id


def test_cli_publish_without_generation_records_what_it_knows(
    demo_repo: Path, tmp_path: Path
) -> None:
    proposal = tmp_path / "p.json"
    proposal.write_text(json.dumps(PROPOSAL.model_dump()))
    code = main(
        ["publish", str(proposal), "--issue", "1", "--repo", str(demo_repo), "--yes"]
        + ["--model", "gemma3-270m", "--prompt", "backend-dev"]
    )
    assert code == QUEUED
    [record] = Store.for_repo(demo_repo).generations()
    issue = LocalIssueSource(demo_repo).get_issue(1)
    assert record.issue_title == issue.title  # not the PR title, not empty
    assert (record.model_profile, record.prompt_profile) == ("gemma3-270m", "backend-dev")


def test_cli_publish_of_a_generated_file_finds_its_history_entry(
    demo_repo: Path, tmp_path: Path
) -> None:
    run = generated(workspace(demo_repo))  # `agent-tui generate` recorded it
    proposal = tmp_path / "p.json"
    proposal.write_text(json.dumps(PROPOSAL.model_dump()))
    assert main(["publish", str(proposal), "--issue", "1", "--repo", str(demo_repo), "--yes"]) == (
        QUEUED
    )
    records = Store.for_repo(demo_repo).generations()
    assert [r.id for r in records] == [run.review.generation_id]  # type: ignore[union-attr]
    assert records[0].outcome == "queued" and records[0].model_profile == run.model_name
    job = Store.for_repo(demo_repo).jobs()[0]
    assert "Agent-Tui-Model-Profile: " + run.model_name in job.commit_message  # trailers


# -- 5. words ---------------------------------------------------------------------------------


async def test_a_queued_publish_says_what_happened_and_what_to_do(demo_repo: Path) -> None:
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        run = generated(app.workspace)
        await app.push_screen(PreviewScreen(run))
        await pilot.press("p")
        await settle(pilot)
        plan = app.screen
        assert isinstance(plan, PublishPlanScreen) and plan.state == "ready"
        await pilot.press("a", "ctrl+y")
        await settle(pilot)
        assert plan.state == "queued"
        steps = shown(plan.query_one("#plan-steps"))
        confirm = shown(plan.query_one("#plan-confirm"))
        # queueing the PR is expected without GitHub: not a red failure mark
        assert "✗" not in steps and "⏸ pull request" in steps
        assert confirm.count("queued in the outbox") + confirm.count("Queued in the outbox") == 1
        assert "`agent-tui sync` opens the pull request" in confirm
        await pilot.press("escape")
        await settle(pilot)
        toasts = list(app._notifications)
        assert toasts, "no toast after the publish"
        toast = toasts[-1]
        assert toast.title == "Queued in the outbox"
        assert "PublishResult" not in toast.message and "[github] repo" in toast.message


def test_sync_never_tells_the_user_to_run_sync(
    demo_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proposal = tmp_path / "p.json"
    proposal.write_text(json.dumps(PROPOSAL.model_dump()))
    assert main(["publish", str(proposal), "--issue", "1", "--repo", str(demo_repo), "--yes"]) == (
        QUEUED
    )
    err = capsys.readouterr().err
    assert "`agent-tui sync` sends it" in err  # publish: the next step is sync
    assert main(["sync", "--repo", str(demo_repo)]) == QUEUED
    out = capsys.readouterr().out
    assert "agent-tui sync" not in out and "[github] repo" in out
    assert out.count("queued in the outbox") == 1


def test_the_plan_does_not_claim_closes_was_added_while_it_blocks(demo_repo: Path) -> None:
    run = generated(workspace(demo_repo))
    run.edit(pr_body="Adds notes.")
    plan = run.plan_publish()
    codes = {f.code for f in run.review.errors}  # type: ignore[union-attr]
    if "closes-missing" in codes:
        assert not any("Closes #1" in w for w in plan.warnings), plan.warnings
    else:  # a profile where it only warns: then the plan says it will add it
        assert any("'Closes #1' will be added" in w for w in plan.warnings), plan.warnings


async def test_after_a_stop_the_tree_says_the_file_was_cut_off(demo_repo: Path) -> None:
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        run = app.workspace.start(app.workspace.issue_source().get_issue(1), comments=[])
        screen = GeneratingScreen(run, start=False)
        await app.push_screen(screen)
        partial = {"branch_suffix": "x", "files": [{"path": "app/a.py", "content": "x = "}]}
        screen.show_failure(Cancelled(message="cancelled", partial=partial))
        await pilot.pause()
        tree = shown(screen.query_one("#gen-tree"))
        assert "writing…" not in tree and "cut off" in tree


async def test_a_filter_matching_nothing_says_so(demo_repo: Path) -> None:
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"zzqqxx")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, IssuesScreen)
        table = screen.query_one(IssueTable)
        assert table.row_count == 0
        lines = [table.render_line(y).text for y in range(3)]
        assert "no open issue matches 'zzqqxx'" in lines[1] and "Esc" in lines[1]


# -- 4. screens drawn whole at the size they are opened at --------------------------------------


def long_history(repo: Path) -> None:
    store = Store.for_repo(repo)
    for number in range(1, 6):
        store.record_generation(
            issue_number=number,
            issue_title=f"Issue {number} with a title long enough to need most of a wide column",
            model_profile="gemma3-270m",
            prompt_profile="backend-dev",
            proposal=PROPOSAL.model_dump(),
            outcome="discarded",
            detail="left unpublished after a long review with many edits and a regeneration",
        )


def fits(table: Any) -> bool:
    """Every column of a ``DataTable`` is on screen: no horizontal scrolling needed."""
    return bool(table.virtual_size.width <= table.scrollable_content_region.width)


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_history_columns_fit_the_first_time(demo_repo: Path, size: tuple[int, int]) -> None:
    from textual.widgets import DataTable

    long_history(demo_repo)
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("H")
        await settle(pilot)
        table = app.screen.query_one("#history", DataTable)
        assert table.row_count == 5
        assert fits(table), (table.virtual_size, table.scrollable_content_region)
        header = [str(c.label) for c in table.columns.values()]
        widths = dict(zip(header, (c.width for c in table.columns.values()), strict=True))
        assert widths["outcome"] >= 9 and widths["when (UTC)"] >= 11, widths  # never squashed
        assert widths["issue"] >= (18 if size[0] >= 100 else 8), widths
        assert "outcome" in header[:4]  # what became of it is seen first
        await pilot.resize_terminal(size[0] + 40, size[1])
        await settle(pilot)
        assert fits(table) and table.row_count == 5


async def test_models_rows_fit_without_a_scrollbar(demo_repo: Path) -> None:
    from textual.widgets import DataTable

    from tui.screens.models import ModelsScreen

    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = ModelsScreen(run_doctor=False)
        await app.push_screen(screen)
        await settle(pilot)
        for name in ("#models", "#prompts"):
            table = screen.query_one(name, DataTable)
            assert fits(table), (name, table.virtual_size, table.scrollable_content_region)
        # the footer is drawn with the screen: its keys are on the last line
        from textual.widgets._footer import FooterKey

        keys = list(screen.query(FooterKey))
        assert keys and all(k.region.y == 29 for k in keys)


@pytest.mark.parametrize("screen_name", ["issues", "preview"])
async def test_every_footer_label_fits_at_80_columns(demo_repo: Path, screen_name: str) -> None:
    from textual.widgets._footer import FooterKey

    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        if screen_name == "preview":
            await app.push_screen(PreviewScreen(generated(app.workspace)))
            await settle(pilot)
        keys = [k for k in app.screen.query(FooterKey) if k.display]
        assert keys
        where = [(k.description, k.region.x, k.region.right) for k in keys]
        assert all(right <= 80 for _d, _x, right in where), where


# -- 6. small things ----------------------------------------------------------------------------


async def test_a_dropped_file_comes_back_with_ctrl_z(demo_repo: Path) -> None:
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        run = generated(app.workspace)
        preview = PreviewScreen(run)
        await app.push_screen(preview)
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert run.review is not None and run.review.proposal.files == []
        await pilot.press("ctrl+z")
        await settle(pilot)
        assert run.review.proposal == PROPOSAL
        assert preview.query_one(FileList).paths == ["docs/notes.md"]


async def test_blocking_errors_are_the_first_thing_in_the_plan_at_80x24(demo_repo: Path) -> None:
    app = AgentTuiApp(demo_repo, load_config(demo_repo), source=LocalIssueSource(demo_repo))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        run = generated(app.workspace)
        run.edit(commit_message="x" * 119, pr_body="no closing keyword")
        await app.push_screen(PreviewScreen(run))
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        plan = app.screen
        assert isinstance(plan, PublishPlanScreen) and plan.state == "blocked"
        body = plan.query_one("#plan-body")
        lines = shown(plan.query_one("#plan-text")).splitlines()
        where = next(i for i, line in enumerate(lines) if "Cannot publish" in line)
        assert where + 1 < body.size.height, (where, body.size)  # seen without scrolling
