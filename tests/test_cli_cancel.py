"""Ctrl-C during ``agent-tui generate`` cancels the generation cleanly, end to end.

A real process on the embedded model: SIGINT once the progress on stderr says the prompt is
processed (the decoding has started) must stop the decode within a token and exit with
``CANCELLED`` (5), the ``--json`` summary saying so -- not a traceback, not 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.cli.exitcodes import CANCELLED
from tests.cli_repo import LLAMA_NAME, llama_profile, write_config
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.model

#: an answer far longer than the time the test waits: hundreds of tokens of file content
LONG_ANSWER = (
    "Write app/words.py: a Python module with a list named WORDS holding the 300 most common "
    "English words, one per line, each with a comment giving its meaning. Reply with the JSON "
    "change proposal only."
)


@pytest.mark.parametrize("to_group", [False, True], ids=["process", "terminal-group"])
def test_sigint_cancels_generate_with_exit_5(
    tmp_path: Path, embedded_model_path: Path, to_group: bool
) -> None:
    """``terminal-group``: Ctrl-C in a terminal signals the whole foreground process group;
    the model host (a child in its own session) must not die of it: the app cancels."""
    config = write_config(tmp_path / "config.toml", llama_profile(embedded_model_path))
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(LONG_ANSWER)
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {**os.environ, "AGENT_TUI_CONFIG": str(config), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "generate", "--prompt-file", str(prompt)]
        + ["--json", "--max-tokens", "800"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=to_group,  # a group of its own, as a terminal's foreground job
    )
    # a watchdog: whatever happens, the process does not outlive the test
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        assert proc.stderr is not None
        progress: list[str] = []
        for line in proc.stderr:  # the prompt line is printed once decoding begins
            progress.append(line)
            if line.startswith("prompt "):
                break
        else:
            pytest.fail("no progress line before the process ended: " + "".join(progress))
        sent = time.monotonic()
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(progress) + stderr
    assert proc.returncode == CANCELLED, err
    assert "cancelling..." in err and "Traceback" not in err
    assert "cancelled:" in err  # the failure's message on stderr, with its hint
    result = json.loads(stdout)
    assert result["status"] == "cancelled"
    assert result["stats"]["finish_reason"] == "cancelled"
    assert result["stats"]["model"] == LLAMA_NAME
    # stopped well before the budget: the signal stopped it, not the end of the answer
    assert result["stats"]["completion_tokens"] < 800
    assert result["raw"].startswith("{")
    assert waited < 30
