"""A repository with issues the embedded model answers quickly, for the CLI and batch tests.

Why: end-to-end tests of ``generate ISSUE`` and ``batch`` need real generations that finish in
a few seconds on a CPU. Each issue's body asks for one exact proposal, which the embedded
Gemma 3 270M copies under the schema in about 45 tokens; the tiny prompt profile keeps the
prompt near 300 tokens, so the prompt prefix (system + tree) is shared between issues.

Every test uses the same llama.cpp profile text (``LLAMA_PROFILE`` named ``t``), so the
process-wide backend registry loads the model once for all of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests import cpu_variant
from tests.conftest import git

TINY_PROMPT = (
    "---\nname: tiny\ndescription: short system prompt for tests\n---\n"
    "You write small, complete changes as one JSON object.\n"
)
LLAMA_NAME = "t"
SERVER_NAME = "srv"


def proposal_for(number: int, *, path: str | None = None, content: str | None = None) -> str:
    """The JSON the issue asks for (a clean proposal unless ``content`` breaks it)."""
    data = {
        "branch_suffix": f"file-{number}",
        "commit_message": f"feat: file {number}",
        "pr_title": f"feat: file {number}",
        "pr_body": f"Closes #{number}",
        "files": [{"path": path or f"f{number}.txt", "content": content or f"{number}\n"}],
    }
    return json.dumps(data, separators=(",", ":"))


def issue_body(number: int, **kwargs: Any) -> str:
    return "Reply with this JSON exactly: " + proposal_for(number, **kwargs)


#: an issue whose answer has an error finding (a Python file that does not parse)
BROKEN = {"path": "b.py", "content": "def b(:\n"}


def write_local_issues(repo: Path, issues: dict[int, dict[str, Any]]) -> None:
    """``.agent-tui/issues/N.md`` per issue (``title``, ``labels``, ``body`` keys)."""
    folder = repo / ".agent-tui" / "issues"
    folder.mkdir(parents=True, exist_ok=True)
    for number, spec in issues.items():
        labels = ", ".join(spec.get("labels", []))
        (folder / f"{number}.md").write_text(
            f"---\nnumber: {number}\ntitle: {spec['title']}\nlabels: [{labels}]\n---\n"
            f"{spec['body']}\n"
        )


def prepare_repo(repo: Path, issues: dict[int, dict[str, Any]] | None = None) -> None:
    """Add the tiny prompt profile (and local issues) to ``repo`` and commit them."""
    (repo / ".agent-tui" / "prompts").mkdir(parents=True, exist_ok=True)
    (repo / ".agent-tui" / "prompts" / "tiny.md").write_text(TINY_PROMPT)
    if issues:
        write_local_issues(repo, issues)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "agent-tui test setup")


def simple_issues(*numbers: int, labels: tuple[str, ...] = ("easy",)) -> dict[int, Any]:
    return {
        n: {"title": f"Add file {n}", "labels": list(labels), "body": issue_body(n)}
        for n in numbers
    }


def llama_profile(model_path: Path) -> str:
    """The shared in-process profile (the default model).

    ``backtrack = 0``: these issues ask for an exact answer, some deliberately broken
    (``BROKEN``) so that the error-finding paths run; backtracking would repair them.
    """
    return (
        f'default_model = "{LLAMA_NAME}"\ndefault_prompt = "tiny"\n\n'
        f"[models.{LLAMA_NAME}]\n"
        'backend = "llama_cpp"\n'
        f'model_path = "{model_path}"\n'
        'chat_format = "gemma"\n'
        "n_ctx = 1024\nmax_tokens = 160\ntemperature = 0.0\nbacktrack = 0\n"
        f"n_threads = {cpu_variant.N_THREADS}\nn_batch = {cpu_variant.N_BATCH}\n"
    )


def server_profile(base_url: str, *, concurrency: int = 4, name: str = SERVER_NAME) -> str:
    """An OpenAI-compatible profile on a loopback server."""
    return (
        f"\n[models.{name}]\n"
        'backend = "openai"\n'
        f'base_url = "{base_url}"\n'
        'model = "gemma-3-270m"\n'
        f"n_ctx = 1024\nmax_tokens = 160\ntemperature = 0.0\nconcurrency = {concurrency}\n"
    )


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def issue_of(body: dict[str, Any]) -> int | None:
    """Which test issue a chat request is for (its ``file-N`` branch suffix)."""
    text = json.dumps(body.get("messages", []))
    for n in range(1, 50):
        if f'\\"file-{n}\\"' in text:
            return n
    return None
