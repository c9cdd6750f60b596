"""One snapshot per screen, at 80x24 and at 160x48 (pytest-textual-snapshot's ``snap_compare``).

The screens show real engine data where it is deterministic (the demo repository, its local
issues with fixed dates, the checks and diff of a fixed proposal, a publish plan, the
doctor's verdict on the embedded model) and fixed numbers where they come from a clock or a
model run (generation progress, a context summary, history rows). Regenerate the SVGs with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at them before committing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input, TextArea

from engine.context.result import ContextResult, LeftOut, ShownFile
from engine.core.config import load_config
from engine.core.events import Truncated
from engine.core.models import ChangeProposal, FileChange
from engine.flow.demo import create_demo
from engine.issues.forge.local import LocalIssueSource
from engine.publish.records import GenerationRecord, PublishJob
from tui.app import AgentTuiApp
from tui.messages import ContextBuilt, ProposalStreamed
from tui.screens.details import DetailsModal
from tui.screens.edit_file import EditFileScreen
from tui.screens.error import ErrorModal
from tui.screens.feedback import FeedbackModal
from tui.screens.generating import GeneratingScreen
from tui.screens.help import HelpScreen
from tui.screens.history import HistoryScreen
from tui.screens.issue import IssueScreen
from tui.screens.models import ModelsScreen
from tui.screens.preview import PreviewScreen
from tui.screens.publish_plan import PublishPlanScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]

MAIN_PY = '''"""FastAPI application entry point."""

from fastapi import FastAPI

from app.api.v1.endpoints import health, items
from app.config import settings
from app.database import Base, engine

Base.metadata.create_all(bind=engine)

app = FastAPI(title=settings.app_name)
app.include_router(items.router, prefix="/api/v1/items", tags=["items"])
app.include_router(health.router, tags=["health"])
'''
HEALTH_PY = '''"""Health endpoint."""

from fastapi import APIRouter

router = APIRouter()


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}
'''
PROPOSAL = ChangeProposal(
    branch_suffix="health-endpoint",
    commit_message="feat: add a /health endpoint",
    pr_title="feat: add a /health endpoint",
    pr_body="Adds `GET /health` for load balancers.\n\nCloses #1\n",
    files=[
        FileChange(path="app/api/v1/endpoints/health.py", content=HEALTH_PY),
        FileChange(path="app/main.py", content=MAIN_PY),
    ],
)


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    """The demo repository with fixed issue dates (file times would change every run)."""
    repo = create_demo(tmp_path / "demo").repo
    for day, path in enumerate(sorted((repo / ".agent-tui" / "issues").glob("*.md")), start=1):
        text = path.read_text()
        path.write_text(text.replace("---\n", f"---\nupdated_at: 2024-05-{day:02d}T10:00:00Z\n", 1))
    return repo


def make_app(repo: Path) -> AgentTuiApp:
    return AgentTuiApp(repo, load_config(repo), source=LocalIssueSource(repo))


def run_for(app: AgentTuiApp, number: int = 1) -> Any:
    source = app.workspace.issue_source()
    return app.workspace.start(source.get_issue(number), comments=[])


def reviewed_run(app: AgentTuiApp) -> Any:
    """An issue run holding a real review (checks and diff) of ``PROPOSAL``."""
    run = run_for(app)
    run.review = run._review(PROPOSAL)
    return run


def fixed_context() -> ContextResult:
    return ContextResult(
        messages=[],
        n_ctx=8192,
        reserved_tokens=2048,
        budget=6144,
        total_tokens=1812,
        system_tokens=1009,
        tree_tokens=134,
        issue_tokens=141,
        shown=[
            ShownFile("app/main.py", 103, "named in the issue"),
            ShownFile("requirements.txt", 63, "always included by the profile"),
            ShownFile("app/api/v1/endpoints/items.py", 301, "lexical relevance"),
        ],
        left_out=[LeftOut(".env", "secret-file", "never sent: an environment file")],
        tree_files=21,
        tree_summarised=False,
    )


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def push(screen_factory: Any) -> Any:
    """A ``run_before`` that waits for the issue list, then pushes a screen."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        screen = screen_factory(pilot.app)
        await pilot.app.push_screen(screen)
        await settle(pilot)
        after = getattr(screen, "snapshot_setup", None)
        if after is not None:
            after()
            await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_issues_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(demo_repo), terminal_size=size, run_before=settle)


def test_issues_screen_filtered(snap_compare: Any, demo_repo: Path) -> None:
    assert snap_compare(make_app(demo_repo), press=["slash", *"user"], run_before=settle)


def test_issues_screen_no_color(
    snap_compare: Any, demo_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(demo_repo)
    assert app.no_color
    assert snap_compare(app, press=["down"], run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_issue_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    def factory(app: AgentTuiApp) -> IssueScreen:
        run = run_for(app)
        screen = IssueScreen(run.issue, run=run, auto_context=False)
        screen.snapshot_setup = lambda: screen.post_message(  # type: ignore[attr-defined]
            ContextBuilt(1, fixed_context())
        )
        return screen

    assert snap_compare(make_app(demo_repo), terminal_size=size, run_before=push(factory))


PARTIAL = {
    "branch_suffix": "health-endpoint",
    "commit_message": "feat: add a /health endpoint",
    "pr_title": "feat: add a /health endpoint",
    "pr_body": "Closes #1",
    "files": [
        {"path": "app/api/v1/endpoints/health.py", "content": HEALTH_PY},
        {"path": "app/main.py", "content": MAIN_PY[:120]},
    ],
}


@pytest.mark.parametrize("size", SIZES)
def test_generating_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    def factory(app: AgentTuiApp) -> GeneratingScreen:
        screen = GeneratingScreen(run_for(app), start=False)
        raw = '{"branch_suffix":"health-endpoint","commit_message":"feat: add a /health'
        screen.snapshot_setup = lambda: screen.post_message(  # type: ignore[attr-defined]
            ProposalStreamed(PARTIAL, raw, 212, 31.4, 6.8, 0.42, 1812, 1009)
        )
        return screen

    assert snap_compare(
        make_app(demo_repo), press=["w"], terminal_size=size, run_before=push(factory)
    )


def test_generating_screen_truncated(snap_compare: Any, demo_repo: Path) -> None:
    def factory(app: AgentTuiApp) -> GeneratingScreen:
        screen = GeneratingScreen(run_for(app), start=False)
        failure = Truncated(
            message="the answer hit the max_tokens limit after 2048 tokens before the JSON closed",
            hint="raise max_tokens in the model profile, or ask for a smaller change",
            partial=PARTIAL,
        )
        screen.snapshot_setup = lambda: screen.show_failure(failure)  # type: ignore[attr-defined]
        return screen

    assert snap_compare(make_app(demo_repo), run_before=push(factory))


@pytest.mark.parametrize("size", SIZES)
def test_preview_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        make_app(demo_repo),
        press=["down"],  # the second file: a modification, diffed
        terminal_size=size,
        run_before=push(lambda app: PreviewScreen(reviewed_run(app))),
    )


def test_preview_screen_no_color(
    snap_compare: Any, demo_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without colour the diff still reads: ``+``/``-`` markers, findings' marks."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(demo_repo)
    assert app.no_color
    assert snap_compare(
        app,
        press=["down"],  # the modification: removed and added lines
        run_before=push(lambda app: PreviewScreen(reviewed_run(app))),
    )


def steady_cursors(screen: Screen[Any]) -> None:
    """No blinking cursor in the text fields (a blink would make the screenshot flaky)."""
    for area in screen.query(TextArea):
        area.cursor_blink = False
    for field in screen.query(Input):
        field.cursor_blink = False


def over_preview(modal: Screen[Any]) -> Any:
    """A ``run_before`` that opens the Preview of ``PROPOSAL``, then ``modal`` over it."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.app.push_screen(PreviewScreen(reviewed_run(pilot.app)))  # type: ignore[arg-type]
        await settle(pilot)
        await pilot.app.push_screen(modal)
        await settle(pilot)
        steady_cursors(modal)
        await settle(pilot)

    return run_before


def test_edit_file_screen(snap_compare: Any, demo_repo: Path) -> None:
    """The in-app editor on a Python file: highlighted, line numbers, Save/Discard keys."""
    screen = EditFileScreen("app/main.py", MAIN_PY)
    assert snap_compare(make_app(demo_repo), run_before=over_preview(screen))


def test_details_modal(snap_compare: Any, demo_repo: Path) -> None:
    modal = DetailsModal(
        PROPOSAL.branch_suffix, PROPOSAL.commit_message, PROPOSAL.pr_title, PROPOSAL.pr_body
    )
    assert snap_compare(make_app(demo_repo), run_before=over_preview(modal))


def test_feedback_modal(snap_compare: Any, demo_repo: Path) -> None:
    assert snap_compare(
        make_app(demo_repo),
        press=[*"add a test"],
        run_before=over_preview(FeedbackModal()),
    )


@pytest.mark.parametrize("size", SIZES)
def test_publish_plan_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        run = reviewed_run(pilot.app)  # type: ignore[arg-type]
        await pilot.app.push_screen(PreviewScreen(run))
        await settle(pilot)
        await pilot.app.push_screen(PublishPlanScreen(run))
        await settle(pilot)

    assert snap_compare(make_app(demo_repo), terminal_size=size, run_before=run_before)


def _history() -> tuple[list[GenerationRecord], list[PublishJob]]:
    common = dict(
        model_profile="gemma3-270m",
        model_ref="sha256:1b7e",
        prompt_profile="backend-dev",
        prompt_hash="ab12",
        seed=0,
        proposal=None,
        findings=[],
        stats={},
        job_id=None,
        updated_at="2024-05-02T10:00:00+00:00",
    )
    entries = [
        GenerationRecord(
            id=3,
            created_at="2024-05-02T09:30:00+00:00",
            issue_number=2,
            issue_title="Add a User model and CRUD",
            outcome="queued",
            detail="push: network unreachable",
            pr_url=None,
            **common,  # type: ignore[arg-type]
        ),
        GenerationRecord(
            id=2,
            created_at="2024-05-01T16:05:00+00:00",
            issue_number=1,
            issue_title="Add a /health endpoint",
            outcome="published",
            detail="",
            pr_url="https://github.com/acme/widgets/pull/7",
            **common,  # type: ignore[arg-type]
        ),
        GenerationRecord(
            id=1,
            created_at="2024-05-01T15:58:00+00:00",
            issue_number=1,
            issue_title="Add a /health endpoint",
            outcome="failed",
            detail="truncated: the answer hit the max_tokens limit",
            pr_url=None,
            **common,  # type: ignore[arg-type]
        ),
    ]
    jobs = [
        PublishJob(
            issue_number=2,
            branch="agent/2-user-model-crud",
            base="main",
            remote="origin",
            proposal={},
            commit_message="feat: add User",
            pr_title="feat: add User",
            pr_body="Closes #2",
            id=4,
            state="committed",
            status="pending",
            last_error="push: network unreachable",
        )
    ]
    return entries, jobs


@pytest.mark.parametrize("size", SIZES)
def test_history_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    entries, jobs = _history()
    assert snap_compare(
        make_app(demo_repo),
        terminal_size=size,
        run_before=push(lambda app: HistoryScreen(entries=entries, jobs=jobs)),
    )


@pytest.mark.parametrize("size", SIZES)
def test_models_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    pushed = push(lambda app: ModelsScreen())

    async def run_before(pilot: Pilot[Any]) -> None:
        await pushed(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ModelsScreen)
        deadline = time.monotonic() + 120
        # the doctor check starts after the first paint and loads in a child process
        while set(screen.status) != set(screen.workspace.config.models):
            assert time.monotonic() < deadline, screen.status
            await pilot.app.workers.wait_for_complete()
            await pilot.pause(0.05)
        await settle(pilot)

    assert snap_compare(make_app(demo_repo), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        make_app(demo_repo), terminal_size=size, run_before=push(lambda app: HelpScreen())
    )


@pytest.mark.parametrize("size", SIZES)
def test_error_modal(snap_compare: Any, demo_repo: Path, size: tuple[int, int]) -> None:
    modal = ErrorModal(
        "Model could not be loaded",
        "profile 'qwen-coder-7b': model file /models/qwen.gguf does not exist",
        "download the GGUF and point model_path at it",
    )
    assert snap_compare(make_app(demo_repo), terminal_size=size, run_before=push(lambda app: modal))
