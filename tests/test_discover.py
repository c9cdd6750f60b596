"""Discovery of the models this machine runs or has (``engine.generate.discover``, issue 16).

The servers are loopback fakes: ``tests.fake_servers`` for Ollama's ``/api/tags`` and the
OpenAI ``/v1/models`` (their GET routes never touch the model), and small stubs here for
llama-server's ``/props`` and for servers that answer slowly or with garbage.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import engine.generate.discover
from engine.cli import main
from engine.core.config import LlamaCppProfile, OllamaProfile, OpenAIProfile, load_config
from engine.flow.demo import create_demo
from engine.generate.backends.llama_cpp import LlamaCppBackend
from engine.generate.discover import discover, find_gguf, probe
from engine.issues.forge.local import LocalIssueSource
from tests.fake_servers import FakeModelServer, ServerKnobs


@pytest.fixture
def fake(embedded_model_path: Path) -> Iterator[Callable[..., FakeModelServer]]:
    """Loopback Ollama/OpenAI fakes (the model is never loaded: only GET routes are used)."""
    backend = LlamaCppBackend(
        "unused",
        LlamaCppProfile(backend="llama_cpp", model_path=str(embedded_model_path)),
    )
    started: list[FakeModelServer] = []

    def start(**knobs: Any) -> FakeModelServer:
        server = FakeModelServer(backend, ServerKnobs(**knobs)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def stub(routes: dict[str, tuple[float, bytes]]) -> tuple[str, Callable[[], None]]:
    """A loopback server answering ``path -> (delay, body)``; returns its URL and a stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            delay, body = routes.get(self.path, (0.0, b""))
            time.sleep(delay)
            self.send_response(200 if self.path in routes else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return f"http://127.0.0.1:{httpd.server_address[1]}", stop


LLAMA_PROPS = {
    "model_path": "/models/qwen2.5-coder-7b-instruct-q4_k_m.gguf",
    "default_generation_settings": {"n_ctx": 16384},
}
LLAMA_MODELS = {"object": "list", "data": [{"id": "qwen2.5-coder-7b-instruct-q4_k_m.gguf"}]}


def test_ollama_and_openai_servers_are_found_as_ready_profiles(
    fake: Callable[..., FakeModelServer],
) -> None:
    ollama = fake(models=("qwen2.5-coder:7b",))
    vllm = fake(models=("Qwen/Qwen2.5-Coder-7B-Instruct",), context_length=32768)
    found = discover([("ollama", ollama.url), ("vllm", vllm.url)], folders=[])
    assert [(d.kind, d.model) for d in found] == [
        ("ollama", "qwen2.5-coder:7b"),
        ("vllm", "Qwen/Qwen2.5-Coder-7B-Instruct"),
    ]
    profile = found[0].profile()
    assert isinstance(profile, OllamaProfile) and profile.host == ollama.url
    served = found[1].profile()
    assert isinstance(served, OpenAIProfile) and served.base_url == vllm.v1
    assert served.n_ctx == 32768 and found[1].n_ctx == 32768  # what the server reports


def test_llama_server_reports_its_served_model_and_context() -> None:
    url, stop = stub(
        {
            "/props": (0.0, json.dumps(LLAMA_PROPS).encode()),
            "/v1/models": (0.0, json.dumps(LLAMA_MODELS).encode()),
        }
    )
    try:
        [found] = probe("llama-server", url)
    finally:
        stop()
    assert found.model == "qwen2.5-coder-7b-instruct-q4_k_m.gguf" and found.n_ctx == 16384
    assert found.name == "llama-server-qwen2.5-coder-7b-instruct-q4-k-m"
    assert found.profile().n_ctx == 16384


@pytest.mark.parametrize(
    "body",
    [b"<html>Sign in to the proxy</html>", b'{"models": "nope"}', b"[1, 2]", b'{"data": [7]}'],
)
def test_garbage_answers_are_not_listed(body: bytes) -> None:
    routes = {p: (0.0, body) for p in ("/api/tags", "/v1/models", "/props")}
    url, stop = stub(routes)
    try:
        kinds = ["ollama", "llama-server", "lm-studio", "vllm", "sglang"]
        assert discover([(k, url) for k in kinds], folders=[]) == []
    finally:
        stop()


def test_a_slow_server_costs_one_short_timeout_and_is_skipped(
    fake: Callable[..., FakeModelServer],
) -> None:
    url, stop = stub({"/api/tags": (3.0, b'{"models": [{"name": "slow:1b"}]}')})
    healthy = fake(models=("qwen2.5-coder:7b",))
    try:
        started = time.perf_counter()
        found = discover([("ollama", url), ("ollama", healthy.url)], folders=[], timeout=0.3)
        took = time.perf_counter() - started
    finally:
        stop()
    assert [d.model for d in found] == ["qwen2.5-coder:7b"]
    assert took < 2.0, took  # asked at once: the slow one does not hold the others


def test_only_loopback_is_ever_asked() -> None:
    started = time.perf_counter()
    assert probe("ollama", "http://192.0.2.1:11434", timeout=5) == []  # TEST-NET: not asked
    assert probe("vllm", "http://example.com:8000", timeout=5) == []
    assert time.perf_counter() - started < 0.5


def test_ollama_host_replaces_the_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real default_servers (conftest stubs it out)
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11500")
    assert engine.generate.discover.default_servers()[0] == ("ollama", "http://127.0.0.1:11500")


def test_gguf_files_in_the_usual_folders(tmp_path: Path) -> None:
    hub = tmp_path / "hub" / "models--org--repo" / "snapshots" / "abc"
    hub.mkdir(parents=True)
    for name in ("coder-q4_k_m.gguf", "mmproj-f16.gguf", "big-00001-of-00002.gguf"):
        (hub / name).write_bytes(b"GGUF")
    (hub / "big-00002-of-00002.gguf").write_bytes(b"GGUF")
    found = find_gguf([tmp_path / "hub", tmp_path / "missing"])
    assert sorted(d.name for d in found) == ["gguf-big-00001-of-00002", "gguf-coder-q4-k-m"]
    profile = next(d for d in found if "coder" in d.name).profile()
    assert isinstance(profile, LlamaCppProfile) and profile.model_path == str(
        hub / "coder-q4_k_m.gguf"
    )


def test_cli_discover_lists_and_saves_only_when_asked(
    fake: Callable[..., FakeModelServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ollama = fake(models=("qwen2.5-coder:7b",))
    monkeypatch.setattr(
        engine.generate.discover, "default_servers", lambda: [("ollama", ollama.url)]
    )
    config = tmp_path / "user.toml"
    monkeypatch.setattr("engine.core.config.user_config_path", lambda: config)
    assert main(["models", "--discover"]) == 0
    out = capsys.readouterr().out
    assert "ollama-qwen2.5-coder-7b" in out and "Ollama" in out
    assert not config.exists()  # listing writes nothing
    assert main(["models", "--discover", "--save", "ollama-qwen2.5-coder-7b"]) == 0
    profile = load_config(tmp_path, user_config=config).profile("ollama-qwen2.5-coder-7b")
    assert isinstance(profile, OllamaProfile) and profile.model == "qwen2.5-coder:7b"


async def test_models_screen_uses_a_found_model_for_the_session_and_saves_on_s(
    fake: Callable[..., FakeModelServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from textual.widgets import DataTable

    from tui.app import AgentTuiApp
    from tui.screens.models import ModelsScreen

    ollama = fake(models=("qwen2.5-coder:7b",))
    monkeypatch.setattr(
        engine.generate.discover, "default_servers", lambda: [("ollama", ollama.url)]
    )
    config = tmp_path / "user.toml"
    monkeypatch.setattr("engine.core.config.user_config_path", lambda: config)
    repo = create_demo(tmp_path / "demo").repo
    app = AgentTuiApp(repo, load_config(repo), source=LocalIssueSource(repo))
    async with app.run_test(size=(100, 30)) as pilot:
        while app.discovered is None:  # found in the background after the first paint
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert app.first_paint_at is not None
        screen = ModelsScreen(run_doctor=False)
        await app.push_screen(screen)
        await pilot.pause()
        table = screen.query_one("#models", DataTable)
        name = "ollama-qwen2.5-coder-7b"
        assert name in [str(k.value) for k in table.rows]
        table.move_cursor(row=[str(k.value) for k in table.rows].index(name))
        await pilot.press("enter")
        await pilot.pause()
        assert app.model_name == name and not config.exists()  # this session only
        await pilot.press("s")
        await pilot.pause()
        assert f'[models."{name}"]' in config.read_text()


async def test_a_slow_server_never_delays_the_first_paint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tui.app import AgentTuiApp

    url, stop = stub({"/api/tags": (2.0, b'{"models": [{"name": "slow:1b"}]}')})
    monkeypatch.setattr(engine.generate.discover, "default_servers", lambda: [("ollama", url)])
    repo = create_demo(tmp_path / "demo").repo
    app = AgentTuiApp(repo, load_config(repo), source=LocalIssueSource(repo))
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            while app.first_paint_at is None:
                await pilot.pause(0.02)
            assert app.discovered is None  # still asking the slow server
            assert app.first_paint_at - app.started_at < 2.0
            await app.workers.wait_for_complete()
            assert app.discovered == []  # it timed out: nothing listed, nothing broken
    finally:
        stop()


async def test_a_failed_answer_of_the_embedded_model_offers_the_found_ones(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from engine.core.events import Looping
    from engine.generate.discover import Discovered
    from tui.app import AgentTuiApp
    from tui.screens.generating import GeneratingScreen

    repo = create_demo(tmp_path / "demo").repo
    app = AgentTuiApp(repo, load_config(repo), source=LocalIssueSource(repo))
    async with app.run_test(size=(100, 30)) as pilot:
        while app.discovered is None:  # the startup discovery (stubbed: finds nothing) is done
            await app.workers.wait_for_complete()
            await pilot.pause()
        app.discovered = [Discovered("ollama-qwen2.5-coder-7b", "ollama", "qwen2.5-coder:7b", "x")]
        run = app.workspace.start(app.workspace.issue_source().get_issue(1), comments=[])
        screen = GeneratingScreen(run, start=False)
        await app.push_screen(screen)
        screen.show_failure(Looping(message="a/b/b/b/b", hint="try a larger model"))
        await pilot.pause()
        console = Console(file=io.StringIO(), width=200, color_system=None, record=True)
        console.print(screen.query_one("#gen-outcome").content)  # type: ignore[attr-defined]
        assert "ollama-qwen2.5-coder-7b" in console.export_text()
