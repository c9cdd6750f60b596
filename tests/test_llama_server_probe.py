"""``doctor`` tells llama-server (one model, any name) from servers where the name matters.

llama-server serving one model answers every chat request with it whatever ``model`` says, so
a profile whose ``model`` is a label of the user's choosing works; ``doctor`` used to say
"CANNOT run" for it. It is told apart by its own ``GET /props``. A multi-model server (vLLM,
LM Studio, llama-cpp-python's server) still needs a served id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.config import load_config
from engine.core.events import Finished, InvalidAnswer, Truncated
from engine.flow.doctor import check_openai, run_doctor
from engine.generate.backends.base import GenerationRequest
from engine.generate.backends.openai_compat import OpenAICompatBackend
from tests import test_openai_backend
from tests.fake_servers import OPENAI_MODEL, PROPOSAL_MESSAGES, FakeModelServer
from tests.test_openai_backend import profile

pytestmark = pytest.mark.model

StartServer = Callable[..., FakeModelServer]
#: python -m llama_cpp.server on the embedded model (the fixture of the OpenAI backend tests)
llama_cpp_server = test_openai_backend.llama_cpp_server


def test_single_model_llama_server_serves_any_name_and_doctor_says_which(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(llama_server=True, models=(OPENAI_MODEL,), context_length=8192)
    rows = {r.name: r for r in check_openai("mine", profile(srv.v1, model="my-coder"))}
    assert rows["model"].status == "ok", rows["model"].detail
    assert OPENAI_MODEL in rows["model"].detail and "my-coder" in rows["model"].detail
    # the context the server runs with (/props), not the training context of /v1/models
    assert rows["context length"].detail.startswith("model context 8192")
    notes = [r.detail for r in rows.values() if r.name == "server note"]
    assert any("answers any model name" in n for n in notes)


def test_a_label_as_model_name_generates_against_a_single_model_llama_server(
    fake_model_server: StartServer,
) -> None:
    srv = fake_model_server(llama_server=True, models=(OPENAI_MODEL,))
    backend = OpenAICompatBackend("mine", profile(srv.v1, model="my-coder"))
    final = list(backend.generate(GenerationRequest(PROPOSAL_MESSAGES, max_files=1)))[-1]
    assert isinstance(final, (Finished, InvalidAnswer, Truncated)), final  # the model answered
    (body,) = srv.bodies("/v1/chat/completions")
    assert body["model"] == "my-coder"


def test_doctor_says_can_run_for_a_llama_server_profile_with_a_label(
    fake_model_server: StartServer, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = fake_model_server(llama_server=True, models=(OPENAI_MODEL,))
    config = git_repo / "agent-tui.toml"
    config.write_text(
        '[models.local]\nbackend = "openai"\n'
        f'base_url = "{srv.v1}"\nmodel = "whatever-i-like"\nn_ctx = 2048\n'
    )
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    report = run_doctor(load_config(git_repo), git_repo, ["local"])
    assert report.runnable["local"], report.render()
    assert "can run" in report.render() and "CANNOT run" not in report.render()


@pytest.mark.parametrize(
    "knobs",
    [
        {"llama_server": True, "models": (OPENAI_MODEL, "qwen2.5-coder")},  # a router: names matter
        {"llama_server": False, "models": (OPENAI_MODEL,)},  # vLLM-like: no /props
    ],
    ids=["llama-server-many-models", "no-props"],
)
def test_where_the_name_matters_a_wrong_name_still_fails(
    fake_model_server: StartServer, knobs: dict[str, Any]
) -> None:
    srv = fake_model_server(**knobs)
    backend = OpenAICompatBackend("x", profile(srv.v1, model="my-coder"))
    probe = backend.probe()
    assert probe.reachable and probe.model_present is False and probe.served_model == ""
    rows = {r.name: r for r in check_openai("x", backend.profile)}
    assert rows["model"].status == "fail" and OPENAI_MODEL in rows["model"].detail


def test_llama_cpp_python_server_is_not_a_llama_server(llama_cpp_server: str) -> None:
    backend = OpenAICompatBackend("real", profile(llama_cpp_server, model="my-coder"))
    assert backend.llama_server_props() is None  # it has no /props
    probe = backend.probe()
    assert probe.reachable and probe.model_present is False and probe.served_model == ""
    served = OpenAICompatBackend("real", profile(llama_cpp_server)).probe()
    assert served.model_present and served.served_model == ""
