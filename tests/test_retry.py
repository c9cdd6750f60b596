"""A retry after a loop or a truncation is not the same computation again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.core.config import load_config
from engine.core.events import Finished, GenerationEvent, GenerationStats, Looping, Truncated
from engine.core.models import ChangeProposal, FileChange
from engine.flow.demo import create_demo
from engine.flow.run_events import RETRY_TEMPERATURE, RetrySampling
from engine.flow.session import ModelHost, Workspace
from engine.generate.backends.base import Backend, GenerationRequest


class Scripted(Backend):
    """Answers with the scripted events in turn and records every request."""

    kind = "scripted"

    def __init__(self, name: str, profile: Any, script: list[str]) -> None:
        super().__init__(name, profile)
        self.script = script
        self.requests: list[GenerationRequest] = []

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"]) // 4 + 4 for m in messages)

    def count_text(self, text: str) -> int:
        return len(text) // 4

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        self.requests.append(request)
        kind = self.script[min(len(self.requests), len(self.script)) - 1]
        if kind == "loop":
            yield Looping(message="looped", raw="{", stats=GenerationStats())
        elif kind == "truncated":
            yield Truncated(message="cut", raw="{", stats=GenerationStats())
        else:
            proposal = ChangeProposal(
                branch_suffix="add-health",
                commit_message="feat: add health",
                pr_title="feat: add health",
                pr_body="Closes #1",
                files=[FileChange(path="app/health.py", content="x = 1\n")],
            )
            yield Finished(proposal=proposal, stats=GenerationStats(), raw="{}")


def workspace(tmp_path: Path, script: list[str], user_toml: str = "") -> tuple[Workspace, list]:
    repo = create_demo(tmp_path / "demo").repo
    user = tmp_path / "user.toml"
    if user_toml:
        user.write_text(user_toml)
    config = load_config(repo, user_config=user)
    made: list[Scripted] = []

    def factory(name: str, profile: Any) -> Backend:
        made.append(Scripted(name, profile, script))
        return made[-1]

    ws = Workspace(repo, config, models=ModelHost(config, factory=factory))
    return ws, made


def attempt(run: Any) -> list[Any]:
    return list(run.generate(threading.Event()))


def test_retry_after_a_loop_uses_a_new_seed_and_a_small_temperature(tmp_path: Path) -> None:
    ws, made = workspace(tmp_path, ["loop", "loop", "ok"])
    run = ws.start(ws.issue_source().get_issue(1))
    first = attempt(run)
    assert isinstance(first[-1], Looping)
    assert not [e for e in first if isinstance(e, RetrySampling)]
    second = attempt(run)
    [retry] = [e for e in second if isinstance(e, RetrySampling)]
    third = attempt(run)
    [again] = [e for e in third if isinstance(e, RetrySampling)]
    requests = made[0].requests
    profile = ws.config.profile(ws.model_name)
    assert requests[0].seed is None and requests[0].temperature is None  # the profile's own
    assert requests[1].seed == retry.seed != profile.seed
    assert requests[1].temperature == retry.temperature == RETRY_TEMPERATURE
    assert requests[2].seed == again.seed not in (profile.seed, retry.seed)  # each retry its own
    assert "seed" in retry.describe() and "looped" in retry.describe()
    assert all(r.issue_number == 1 for r in requests)
    assert run.provenance().seed == again.seed  # the proposal records the seed it came from


def test_retry_after_a_truncation_too_but_not_after_a_finished_answer(tmp_path: Path) -> None:
    ws, made = workspace(tmp_path, ["truncated", "ok", "ok"])
    run = ws.start(ws.issue_source().get_issue(1))
    attempt(run)
    second = attempt(run)
    [retry] = [e for e in second if isinstance(e, RetrySampling)]
    assert retry.reason == "truncated" and "truncated" in retry.describe()
    third = attempt(run)  # after a finished answer: the profile's settings again
    assert not [e for e in third if isinstance(e, RetrySampling)]
    assert made[0].requests[2].seed is None


def test_a_user_who_pinned_seed_and_temperature_keeps_them(tmp_path: Path) -> None:
    pinned = (
        "[models.pinned]\nbackend = 'llama_cpp'\nmodel_path = 'x.gguf'\n"
        "temperature = 0.0\nseed = 5\n"
    )
    ws, made = workspace(tmp_path, ["loop", "ok"], pinned)
    ws.set_model("pinned")
    run = ws.start(ws.issue_source().get_issue(1))
    attempt(run)
    second = attempt(run)
    assert not [e for e in second if isinstance(e, RetrySampling)]
    assert made[0].requests[1].seed is None and made[0].requests[1].temperature is None


def test_generate_again_after_a_recorded_loop_is_a_retry(tmp_path: Path) -> None:
    """The CLI's "try again" is running it again: the history says the last attempt looped."""
    ws, made = workspace(tmp_path, ["loop", "ok"])
    issue = ws.issue_source().get_issue(1)
    first = ws.start(issue)
    attempt(first)  # recorded in the history as a failed "looping" attempt
    second = ws.start(issue)  # a new process would start a new run the same way
    second.continue_retries()
    [retry] = [e for e in attempt(second) if isinstance(e, RetrySampling)]
    assert retry.reason == "loop"
    assert made[0].requests[1].seed == retry.seed != ws.config.profile(ws.model_name).seed
    third = ws.start(issue)
    third.continue_retries()  # the last attempt finished: no retry
    assert not [e for e in attempt(third) if isinstance(e, RetrySampling)]
