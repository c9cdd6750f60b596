"""The whole TUI flow with Pilot: the embedded model, a real repository, the loopback GitHub.

Pick an issue -> generate -> preview -> fix and edit -> publish with the confirm key; the
branch lands on the fake's bare repository and exactly one pull request is opened. Enter,
Space and every other key never publish; Esc during generation leaves nothing written; a
publish with the network cut lands in the outbox.

Every test runs a real generation; the model and its prompt-prefix cache are shared by the
process (the backend registry), so only the first one pays for the prompt. What the model
writes is not under test here, and its greedy text differs between CPUs (one CPU's answer
finished, another's looped): the schema each generation is held to admits exactly one answer,
``ANSWER``, so the real engine decodes it under its grammar on any CPU.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from engine.context.prompts import user_prompts_dir
from engine.core.config import load_config
from engine.core.events import Cancelled, GenerationEvent
from engine.flow.demo import create_demo
from engine.generate.backends.model_host import HostedLlamaBackend
from engine.publish.store import Store
from tests.conftest import git, unpin_demo
from tests.github_fake import FAKE_TOKEN, FakeGitHub
from tui.app import AgentTuiApp
from tui.screens.details import DetailsModal
from tui.screens.edit_file import EditFileScreen
from tui.screens.feedback import FeedbackModal
from tui.screens.generating import GeneratingScreen
from tui.screens.history import HistoryScreen
from tui.screens.issue import IssueScreen
from tui.screens.issues import IssuesScreen
from tui.screens.preview import PreviewScreen
from tui.screens.publish_plan import PublishPlanScreen
from tui.widgets.file_list import FileList
from tui.widgets.issue_table import IssueTable
from tui.widgets.status_bar import StatusBar

pytestmark = pytest.mark.model

SIZE = (100, 32)
HEALTH_BODY = (
    "Load balancers need a cheap liveness probe.\n\n"
    'Add `GET /health` returning `{"status": "ok"}` with status 200, in a new file\n'
    "`app/api/v1/endpoints/health.py`, include its router in `app/main.py`, and add a\n"
    "test in `tests/test_health.py`.\n"
)
HEALTH_PY = '''"""Health endpoint."""

from fastapi import APIRouter

router = APIRouter()


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}
'''


#: The one answer the flow's generations can give (two files: the review drops one).
ANSWER: dict[str, Any] = {
    "branch_suffix": "health-endpoint",
    "commit_message": "feat: add a /health endpoint",
    "pr_title": "feat: add a /health endpoint",
    "pr_body": "Adds GET /health.\n\nCloses #1",
    "files": [
        {"path": "app/api/v1/endpoints/health.py", "content": "def health():\n    return 1\n"},
        {"path": "tests/test_health.py", "content": "def test_health():\n    assert True\n"},
    ],
}


def only_schema(value: Any) -> dict[str, Any]:
    """A JSON schema that ``value`` (strings, objects, lists of objects) alone satisfies."""
    if isinstance(value, dict):
        return {
            "type": "object",
            "properties": {key: only_schema(item) for key, item in value.items()},
            "required": list(value),
            "additionalProperties": False,
        }
    if isinstance(value, list):
        return {
            "type": "array",
            "prefixItems": [only_schema(item) for item in value],
            "minItems": len(value),
            "maxItems": len(value),
            "items": False,
        }
    return {"const": value}


@pytest.fixture(autouse=True)
def _the_answer_is_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every generation request carries the schema of ``ANSWER`` (see the module docstring)."""
    monkeypatch.setattr(
        "engine.generate.backends.base.proposal_json_schema",
        lambda max_files=None, issue_number=None, shape=None: only_schema(ANSWER),
    )


#: A short prompt profile: the flow is under test here, not the prompt, and a short prompt
#: keeps the CPU's prompt evaluation to seconds.
TINY_PROMPT = """---
name: tiny
description: a short backend prompt for fast tests
always_include: [app/main.py]
---
You are a backend developer on a FastAPI project. Solve the issue with one JSON object:
branch_suffix (lowercase kebab-case, at most 30 characters), commit_message ("feat: ..."),
pr_title ("feat: ..."), pr_body (Markdown that contains "Closes #N" for issue N) and files
(each with its path and its complete content).
"""


def model_profile_toml(model_path: Path) -> str:
    """A small-context profile on the embedded model, and the short prompt profile."""
    return (
        'default_model = "gemma3-test"\n'
        'default_prompt = "tiny"\n\n'
        "[models.gemma3-test]\n"
        'backend = "llama_cpp"\n'
        f'model_path = "{model_path}"\n'
        'chat_format = "gemma"\n'
        "n_ctx = 1536\n"
        "max_tokens = 512\n"
        "temperature = 0.0\n"
    )


@pytest.fixture
def github_repo(
    tmp_path: Path,
    github_fake: FakeGitHub,
    embedded_model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The demo backend, its ``origin`` on the loopback GitHub (which has issue #1)."""
    repo = unpin_demo(create_demo(tmp_path / "demo").repo)
    git(repo, "remote", "remove", "origin")
    github_fake.connect_repo(repo)
    github_fake.add_issue("Add a /health endpoint", HEALTH_BODY, labels=["enhancement"])
    prompts = user_prompts_dir()
    prompts.mkdir(parents=True, exist_ok=True)
    (prompts / "tiny.md").write_text(TINY_PROMPT)
    config = tmp_path / "config.toml"
    config.write_text(model_profile_toml(embedded_model_path) + "\n" + github_fake.config_toml())
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)
    return repo


def checkout_state(repo: Path) -> tuple[str, str, str, str]:
    """The user's checkout: HEAD, the current branch, status and index (never touched)."""
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        git(repo, "ls-files", "-s"),
    )


def branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


def describe(screen: Any) -> str:
    """What a screen is doing, for failure messages."""
    parts = [type(screen).__name__]
    for attr in ("phase", "state", "failure", "running"):
        if hasattr(screen, attr):
            parts.append(f"{attr}={getattr(screen, attr)!r}"[:400])
    return " ".join(parts)


async def wait_for(pilot: Pilot[Any], predicate: Callable[[], bool], what: str) -> None:
    """Let workers run until ``predicate`` holds (no fixed sleeps: each turn waits on them)."""
    deadline = time.monotonic() + 240
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {describe(pilot.app.screen)}")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def open_issue(pilot: Pilot[Any]) -> IssueScreen:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: (
            isinstance(app.screen, IssuesScreen) and app.screen.query_one(IssueTable).row_count > 0
        ),
        "the issue list",
    )
    await pilot.press("slash", *"health", "enter")
    table = app.screen.query_one(IssueTable)
    assert [i.number for i in table.visible_issues()] == [1]
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, IssueScreen), "the issue screen")
    screen = app.screen
    assert isinstance(screen, IssueScreen)
    await wait_for(pilot, lambda: screen.context is not None, "the context")
    return screen


async def generate_to_preview(pilot: Pilot[Any]) -> PreviewScreen:
    await open_issue(pilot)
    await pilot.press("g")
    generating = pilot.app.screen
    # a short answer on a warm prefix cache can finish while the key press is still being
    # processed: then the preview is already up, which is the outcome this helper waits for
    if not isinstance(generating, PreviewScreen):
        assert isinstance(generating, GeneratingScreen), describe(generating)
        await wait_for(
            pilot,
            lambda: pilot.app.screen is not generating or not generating.running,
            "the generation",
        )
    screen = pilot.app.screen
    assert isinstance(screen, PreviewScreen), describe(screen)
    return screen


async def make_publishable(pilot: Pilot[Any], preview: PreviewScreen) -> str:
    """Review like a user: keep one file, write it properly, set the PR details, fix."""
    run = preview.run
    files = preview.query_one(FileList)
    while len(run.review.proposal.files) > 1:  # type: ignore[union-attr]
        files.focus()
        await pilot.press("d")
        await wait_for(pilot, lambda: not preview.busy, "the checks after a drop")
    path = files.current_path
    assert path is not None
    await pilot.press("e")
    editor = pilot.app.screen
    assert isinstance(editor, EditFileScreen)
    editor.query_one(TextArea).text = HEALTH_PY
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: pilot.app.screen is preview and not preview.busy, "checks")
    await pilot.press("t")
    details = pilot.app.screen
    assert isinstance(details, DetailsModal)
    details.query_one("#branch_suffix", Input).value = "health-endpoint"
    details.query_one("#commit_message", Input).value = "feat: add a /health endpoint"
    details.query_one("#pr_title", Input).value = "feat: add a /health endpoint"
    details.query_one("#pr_body", TextArea).text = "Adds GET /health.\n\nCloses #1\n"
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: pilot.app.screen is preview and not preview.busy, "checks")
    review = run.review
    assert review is not None
    assert review.errors == [], [f.render() for f in review.errors]
    return path


async def open_plan(pilot: Pilot[Any]) -> PublishPlanScreen:
    await pilot.press("p")
    plan = pilot.app.screen
    assert isinstance(plan, PublishPlanScreen)
    await wait_for(pilot, lambda: plan.state != "planning", "the publish plan")
    assert plan.state == "ready", plan.plan.errors
    return plan


def published_nothing(github_fake: FakeGitHub, repo: Path) -> bool:
    return (
        github_fake.open_pulls() == []
        and git(github_fake.bare_path, "branch", "--list").split() == ["*", "main"]
        and Store.for_repo(repo).jobs() == []
    )


async def test_issue_to_pull_request(github_repo: Path, github_fake: FakeGitHub) -> None:
    before = checkout_state(github_repo)
    app = AgentTuiApp(github_repo, load_config(github_repo))
    async with app.run_test(size=SIZE) as pilot:
        preview = await generate_to_preview(pilot)
        run = preview.run
        review = run.review
        assert review is not None and review.proposal.files
        # the preview lists exactly the proposal's files, the first one's diff on screen
        listed = preview.query_one(FileList).paths
        assert sorted(listed) == sorted(f.path for f in review.proposal.files)
        assert preview.query_one(FileList).current_path == listed[0]
        path = await make_publishable(pilot, preview)
        plan = await open_plan(pilot)
        branch = plan.plan.branch
        assert branch == "agent/1-health-endpoint"
        if plan._needs_ack():
            await pilot.press("a")
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: plan.state not in ("ready", "publishing"), "publishing")
        assert plan.state == "done", plan.result and plan.result.message
        assert plan.result.pr_url
    # the branch is on the bare remote with the edited file; one PR for it on the server
    assert git(github_fake.bare_path, "branch", "--list", branch).strip() == branch
    pushed = git(github_fake.bare_path, "show", f"{branch}:{path}")
    assert pushed == HEALTH_PY
    pulls = github_fake.open_pulls()
    assert len(pulls) == 1 and pulls[0]["head"]["ref"] == branch
    assert "Closes #1" in pulls[0]["body"]
    # the user's checkout is untouched; the commit is kept on its local branch too
    assert checkout_state(github_repo) == before
    assert sorted(branches(github_repo)) == [branch, "main"]


NOT_CONFIRM_KEYS = [
    "enter",
    "space",
    "tab",
    "shift+tab",
    "y",
    "Y",
    "p",
    "P",
    "c",
    "g",
    "ctrl+s",
    "ctrl+enter",
    "ctrl+j",
    "ctrl+m",
    "up",
    "down",
    *"abcdefghijklmnrstvwxz0123456789",
]


async def test_only_the_confirm_key_publishes(github_repo: Path, github_fake: FakeGitHub) -> None:
    app = AgentTuiApp(github_repo, load_config(github_repo))
    async with app.run_test(size=SIZE) as pilot:
        preview = await generate_to_preview(pilot)
        await make_publishable(pilot, preview)
        plan = await open_plan(pilot)
        for key in NOT_CONFIRM_KEYS:
            await pilot.press(key)
            await pilot.app.workers.wait_for_complete()
            if pilot.app.screen is not plan:  # a key opened something else: close it
                await pilot.press("escape")
            await wait_for(pilot, lambda: plan.state in ("ready", "blocked"), "re-planning")
            assert plan.state == "ready", key
            assert published_nothing(github_fake, github_repo), key
        # the command palette cannot publish either: it never lists the confirmation
        await pilot.press("ctrl+p", *"publish", "enter")
        await pilot.app.workers.wait_for_complete()
        while pilot.app.screen is not plan:
            await pilot.press("escape")
        assert published_nothing(github_fake, github_repo)
        # ... and the confirm key does
        if plan._needs_ack():
            await pilot.press("a")
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: plan.state not in ("ready", "publishing"), "publishing")
        assert plan.state == "done"
    assert len(github_fake.open_pulls()) == 1


def hold_after_first_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the real llama.cpp stream wait, after its first token, until the user cancels.

    Same prompt, temperature 0 and a warm prefix cache make every generation in this module
    the same short answer, which a fast machine finishes before a key press could land. The
    model still decodes every token; only the pace is the user's, like on a slow machine.
    The model host (a child process) does the waiting: ``AGENT_TUI_HOST_HOLD``.
    """
    monkeypatch.setenv("AGENT_TUI_HOST_HOLD", "1")


async def test_cancel_during_generation_writes_nothing(
    github_repo: Path, github_fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_after_first_token(monkeypatch)
    before = checkout_state(github_repo)
    app = AgentTuiApp(github_repo, load_config(github_repo))
    async with app.run_test(size=SIZE) as pilot:
        await open_issue(pilot)
        await pilot.press("g")
        screen = pilot.app.screen
        assert isinstance(screen, GeneratingScreen)
        # wait for the first tokens, then Esc: the engine stops within a token
        deadline = time.monotonic() + 240
        while screen.numbers is None or screen.numbers.completion_tokens < 1:
            assert screen.running and time.monotonic() < deadline
            await pilot.pause(0.02)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.running, "the cancellation")
        assert isinstance(screen.failure, Cancelled)
        assert pilot.app.screen is screen  # still on screen, with what to do next
        assert screen.run.review is None
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, IssueScreen)
    assert checkout_state(github_repo) == before
    assert branches(github_repo) == ["main"]
    assert published_nothing(github_fake, github_repo)
    assert Store.for_repo(github_repo).generations() == []


async def test_offline_publish_lands_in_the_outbox(
    github_repo: Path, github_fake: FakeGitHub
) -> None:
    app = AgentTuiApp(github_repo, load_config(github_repo))
    async with app.run_test(size=SIZE) as pilot:
        preview = await generate_to_preview(pilot)
        await make_publishable(pilot, preview)
        plan = await open_plan(pilot)
        github_fake.stop()  # the network goes away between the plan and the confirmation
        if plan._needs_ack():
            await pilot.press("a")
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: plan.state not in ("ready", "publishing"), "publishing")
        assert plan.state == "queued", plan.result and plan.result.message
        jobs = Store.for_repo(github_repo).pending_jobs()
        assert len(jobs) == 1 and jobs[0].branch == plan.plan.branch
        # the outbox is visible in the History screen
        await pilot.press("escape")
        await pilot.press("H")
        history = pilot.app.screen
        assert isinstance(history, HistoryScreen)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert history.query_one("#outbox").row_count == 1  # type: ignore[attr-defined]


async def test_preload_model_loads_it_at_startup(github_repo: Path) -> None:
    config = Path(os.environ["AGENT_TUI_CONFIG"])
    config.write_text(config.read_text() + "\n[tui]\npreload_model = true\n")
    app = AgentTuiApp(github_repo, load_config(github_repo))
    assert app.config.tui.preload_model
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "loaded", "the preloaded model")
        assert app.models.is_loaded("gemma3-test")
        bar = app.screen.query_one("#status", StatusBar)
        assert bar.badge("model") == "gemma3-test: loaded"


async def test_regenerate_with_feedback_sends_the_answer_and_the_feedback(
    github_repo: Path, github_fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`r` on the preview: the previous answer and the reviewer's words go to the model; the
    replaced proposal and the one left unpublished are both recorded as discarded."""
    sent: list[list[dict[str, str]]] = []
    real = HostedLlamaBackend.generate

    def generate(
        self: HostedLlamaBackend, request: Any, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        sent.append(request.messages)
        yield from real(self, request, cancel)

    monkeypatch.setattr(HostedLlamaBackend, "generate", generate)
    app = AgentTuiApp(github_repo, load_config(github_repo))
    async with app.run_test(size=SIZE) as pilot:
        first = await generate_to_preview(pilot)
        review = first.run.review
        assert review is not None and review.generation_id is not None
        first_id = review.generation_id
        answer = json.dumps(review.proposal.model_dump(), ensure_ascii=False)
        await pilot.press("r")
        modal = pilot.app.screen
        assert isinstance(modal, FeedbackModal)
        modal.query_one(TextArea).text = "Name the route /healthz and add a test for it."
        await pilot.press("ctrl+s")
        await wait_for(
            pilot,
            lambda: isinstance(pilot.app.screen, PreviewScreen) and pilot.app.screen is not first,
            "the second answer",
        )
        second = pilot.app.screen
        assert isinstance(second, PreviewScreen)
        assert len(sent) == 2
        # the same system prompt and a context (which may show fewer files: the follow-up
        # needs room in n_ctx), then the previous answer and the feedback
        assert sent[1][0] == sent[0][0] and len(sent[1]) == len(sent[0]) + 2
        assistant, user = sent[1][len(sent[0]) :]
        assert assistant == {"role": "assistant", "content": answer}
        assert user["role"] == "user" and "/healthz and add a test" in user["content"]
        store = Store.for_repo(github_repo)
        outcomes = {g.id: g.outcome for g in store.generations()}
        assert outcomes[first_id] == "discarded" and len(outcomes) == 2
        await pilot.press("escape")  # leave the second one unpublished
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, IssueScreen), "the issue")
        assert {g.outcome for g in store.generations()} == {"discarded"}
