"""Answer quality: do the model's proposals come out clean, and do the repository's tests pass?

Runs a set of issues through the same path as ``agent-tui generate ISSUE`` (context, the
model profile's generation, the checks: ``engine.flow.issue_run.IssueRun``) and prints, per issue:
the outcome (``clean`` = zero error findings, ``errors``, ``looping``, ``truncated``,
``invalid``, ``failed``), the error codes, the tokens and the seconds. Where the repository's
tests can run on this machine (their imports are installed), each finished proposal is
written into a temporary worktree at HEAD and the repository's test command runs there, as
the publish path does: ``tests: pass``/``fail``. The last lines are ``tests pass: K/N`` and
``clean proposals: K/N``.

The sets (``--set``):

* ``demo``: the five issues of ``agent-tui demo`` (their texts are the demo's, unchanged);
* ``demo-extra``: five more issues over the demo repository (a bug fix, a model field, a
  count endpoint, a setting, a test);
* ``shop``: five issues over a second small FastAPI repository of another shape
  (``backend/app/routers/``, settings in ``backend/app/core/``, no database);
* ``all``: the three together (15 issues).

``--issues demo:1,shop:2`` (or plain numbers within one ``--set``) picks issues. Greedy by
default, so the figures are reproducible on one machine (greedy text differs between CPUs).

Usage::

    python bench/answer_quality.py [--set demo] [--issues 1,2] [--profile gemma3-270m]
        [--dry-multiplier 0.8] [--no-examples] [--gguf PATH --chat-format F] [--json]

Generations on a shared 2-core machine take tens of seconds each: run small sets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.context.result import REASON_BUDGET, ContextOptions  # noqa: E402
from engine.core.config import AppConfig, LlamaCppProfile, load_config  # noqa: E402
from engine.core.errors import UnsafePathError  # noqa: E402
from engine.core.events import (  # noqa: E402
    Finished,
    GenerationFailed,
    InvalidAnswer,
    Looping,
    Truncated,
)
from engine.flow.demo import DEMO_CONFIG, create_demo, issue_text  # noqa: E402
from engine.flow.run_events import Reviewed  # noqa: E402
from engine.flow.session import ModelHost, Workspace  # noqa: E402
from engine.publish import gitops  # noqa: E402

# ------------------------------------------------------------------------------------------
# The issue sets

#: (number, title, body): more issues over the demo repository, numbered after the demo's
DEMO_EXTRA: tuple[tuple[int, str, str], ...] = (
    (
        6,
        "Reject an empty item name",
        'Creating an item with `"name": ""` succeeds. The name must have at least one\n'
        "character: add `min_length=1` to `name` in `ItemCreate` (`app/schemas/item.py`) so\n"
        "the API answers 422, and add a test in `tests/test_items.py`.\n",
    ),
    (
        7,
        "Add a price to items",
        "Items need a price. Add `price: Mapped[float]` (default 0.0) to the `Item` model in\n"
        "`app/models/item.py` and `price: float = 0.0` to `ItemCreate` in\n"
        "`app/schemas/item.py`.\n",
    ),
    (
        8,
        "Count the items",
        'Add `GET /api/v1/items/count` returning `{"count": N}` to\n'
        "`app/api/v1/endpoints/items.py` (declare it before `/{item_id}`), with a test.\n",
    ),
    (
        9,
        "Show the app version in the OpenAPI page",
        'Add `app_version: str = "0.1.0"` to `Settings` in `app/config.py` and pass\n'
        "`version=settings.app_version` to `FastAPI(...)` in `app/main.py`.\n",
    ),
    (
        10,
        "Test the item list",
        "Nothing tests `GET /api/v1/items/`. Add `test_list_items` to `tests/test_items.py`:\n"
        "create an item, list the items, and check that the new item is in the list.\n",
    ),
)

SHOP_FILES: dict[str, str] = {
    "pyproject.toml": """\
[tool.pytest.ini_options]
pythonpath = ["backend"]
testpaths = ["backend/tests"]
""",
    "backend/requirements.txt": "fastapi>=0.110\nhttpx>=0.27\npytest>=8\n",
    "backend/app/__init__.py": "",
    "backend/app/main.py": '''\
"""The shop API."""

from fastapi import FastAPI

from app.core.settings import settings
from app.routers import products

app = FastAPI(title=settings.shop_name)
app.include_router(products.router, prefix="/api/products", tags=["products"])
''',
    "backend/app/core/__init__.py": "",
    "backend/app/core/settings.py": '''\
"""Shop settings (read from the environment)."""

import os


class Settings:
    """Where the shop's settings come from."""

    def __init__(self) -> None:
        self.shop_name = os.getenv("SHOP_NAME", "shop")


settings = Settings()
''',
    "backend/app/routers/__init__.py": "",
    "backend/app/routers/products.py": '''\
"""Product endpoints, backed by an in-memory catalogue."""

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter()


class Product(BaseModel):
    """A product for sale."""

    id: int
    name: str
    price: float


PRODUCTS: dict[int, Product] = {
    1: Product(id=1, name="mug", price=8.5),
    2: Product(id=2, name="cap", price=12.0),
}


@router.get("/", response_model=list[Product])
def list_products() -> list[Product]:
    """Every product."""
    return list(PRODUCTS.values())


@router.get("/{product_id}", response_model=Product)
def get_product(product_id: int) -> Product:
    """One product by id."""
    return PRODUCTS[product_id]
''',
    "backend/tests/__init__.py": "",
    "backend/tests/test_products.py": '''\
"""Tests of the product endpoints."""

from fastapi.testclient import TestClient

from app.main import app

client = TestClient(app)


def test_list_products() -> None:
    response = client.get("/api/products/")
    assert response.status_code == 200
    assert {p["name"] for p in response.json()} >= {"mug", "cap"}


def test_get_product() -> None:
    assert client.get("/api/products/1").json()["name"] == "mug"
''',
}

SHOP_ISSUES: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "Unknown product id gives a 500",
        "`GET /api/products/99` crashes with a KeyError (500). It must answer 404 with\n"
        '`detail` "product not found": fix `get_product` in `backend/app/routers/products.py`\n'
        "and add a test in `backend/tests/test_products.py`.\n",
    ),
    (
        2,
        "Add a health check",
        'Add `GET /api/health` returning `{"ok": true}` in a new router\n'
        "`backend/app/routers/health.py`, include it in `backend/app/main.py`, and test it in\n"
        "`backend/tests/test_health.py`.\n",
    ),
    (
        3,
        "Products need a stock flag",
        "Add `in_stock: bool = True` to the `Product` model in\n"
        "`backend/app/routers/products.py`.\n",
    ),
    (
        4,
        "Configure the currency",
        'Add a `currency` setting (environment variable `SHOP_CURRENCY`, default `"EUR"`) to\n'
        "`Settings` in `backend/app/core/settings.py`.\n",
    ),
    (
        5,
        "List products by name",
        "`GET /api/products/` returns products in insertion order. Sort them by `name` in\n"
        "`list_products` (`backend/app/routers/products.py`) and add a test.\n",
    ),
)

TEST_MODULES = {"demo": ("fastapi", "sqlalchemy", "pydantic_settings", "httpx", "pytest")}
TEST_MODULES["demo-extra"] = TEST_MODULES["demo"]
TEST_MODULES["shop"] = ("fastapi", "httpx", "pytest")
TEST_COMMAND = f"{sys.executable} -m pytest -q -x -p no:cacheprovider"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_demo(root: Path) -> Path:
    """The demo repository (``agent-tui demo``) plus the ``demo-extra`` issues."""
    repo = create_demo(root / "demo").repo
    issues = repo / ".agent-tui" / "issues"
    for number, title, body in DEMO_EXTRA:
        (issues / f"{number:03d}-extra.md").write_text(issue_text(number, title, [], body))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "more issues")
    return repo


def make_shop(root: Path) -> Path:
    """The second repository: ``backend/app/...``, routers, settings without pydantic."""
    repo = root / "shop"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "bench")
    _git(repo, "config", "user.email", "bench@agent-tui.invalid")
    for rel, text in SHOP_FILES.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    issues = repo / ".agent-tui" / "issues"
    issues.mkdir(parents=True)
    for number, title, body in SHOP_ISSUES:
        (issues / f"{number:03d}.md").write_text(issue_text(number, title, [], body))
    (repo / ".agent-tui.toml").write_text(DEMO_CONFIG)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "shop")
    return repo


SETS: dict[str, tuple[str, tuple[int, ...]]] = {
    "demo": ("demo", (1, 2, 3, 4, 5)),
    "demo-extra": ("demo", tuple(n for n, _t, _b in DEMO_EXTRA)),
    "shop": ("shop", tuple(n for n, _t, _b in SHOP_ISSUES)),
}


# ------------------------------------------------------------------------------------------
# Running


@dataclass
class Result:
    """One issue's outcome."""

    label: str
    outcome: str
    codes: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    tests: str = "-"
    """``pass``, ``fail``, ``-`` (no proposal) or ``not run (...)``."""
    rewinds: int = 0
    """Times the engine took tokens back (repeats, Python that cannot parse)."""
    detail: str = ""


def missing_modules(set_name: str) -> list[str]:
    return [m for m in TEST_MODULES[set_name] if importlib.util.find_spec(m) is None]


def run_tests(repo: Path, files: list[tuple[str, str]], timeout: float) -> tuple[bool, str]:
    """Write ``files`` into a worktree at HEAD and run the test command there."""
    worktree = gitops.worktrees_dir(repo) / "bench"
    gitops.add_worktree(repo, worktree, "HEAD")
    try:
        gitops.write_files(worktree, files)
        run = gitops.run_test_command(worktree, TEST_COMMAND, timeout)
    finally:
        gitops.remove_worktree(repo, worktree)
    last = run.output.strip().splitlines()[-1:] if run.output.strip() else ["(no output)"]
    return run.returncode == 0, last[0][:100]


def context_note(run: Any) -> str:
    """What the context left out or outlined (nothing when every file was shown whole)."""
    context = run.build_context()  # the generation's own, cached
    outlined = sum(1 for f in context.shown if f.outline)
    dropped = sum(1 for x in context.left_out if x.reason == REASON_BUDGET)
    if not outlined and not dropped:
        return ""
    return f"context: {outlined} outlined, {dropped} left out"


def run_issue(
    workspace: Workspace,
    set_name: str,
    number: int,
    *,
    tests: bool,
    max_tokens: int | None,
    save: Path | None = None,
    retries: int = 0,
    outlines: bool = True,
) -> Result:
    label = f"{set_name}#{number}"
    if retries:
        label += f" (retries {retries})"
    source = workspace.issue_source()
    issue = source.get_issue(number)
    run = workspace.start(issue, [])
    run.max_tokens = max_tokens
    run.context_options = None if outlines else ContextOptions(outlines=False)
    t0 = time.perf_counter()
    final: Any = None
    review = None
    tokens = rewinds = 0
    for _attempt in range(1 + retries):  # a retry is what `r` does: a new seed after a loop
        for event in run.generate(threading.Event()):
            if isinstance(event, Reviewed):
                review = event.review
            elif isinstance(event, Finished | GenerationFailed):
                final = event
                tokens += event.stats.completion_tokens
                rewinds += event.stats.rewinds
        if not isinstance(final, Looping | Truncated):
            break
    seconds = time.perf_counter() - t0
    context = context_note(run)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        (save / f"{set_name}-{number}.json").write_text(run.last_raw)
    if isinstance(final, Finished) and review is not None:
        codes = sorted({f.code for f in review.findings if f.severity == "error"})
        result = Result(
            label, "errors" if codes else "clean", codes, tokens, seconds, rewinds=rewinds
        )
        attempts = f"attempts: {run.attempts}" if run.attempts > 1 else ""
        result.detail = "; ".join(x for x in (context, attempts) if x)
        if tests:
            missing = missing_modules(set_name)
            if missing:
                result.tests = f"not run (missing {', '.join(missing)})"
            else:
                files = [(f.path, f.content) for f in review.proposal.files]
                try:
                    ok, last = run_tests(workspace.repo, files, 180.0)
                except UnsafePathError as exc:  # the checks reported it: it cannot be written
                    result.tests = f"not run ({exc.message[:60]})"
                else:
                    result.tests = "pass" if ok else "fail"
                    result.detail = "; ".join(x for x in (result.detail, last) if x)
        return result
    outcome = "failed"
    if isinstance(final, Looping):
        outcome = "looping"
    elif isinstance(final, Truncated):
        outcome = "truncated"
    elif isinstance(final, InvalidAnswer):
        outcome = "invalid"
    detail = str(getattr(final, "message", "no final event"))[:160]
    if run.attempts > 1:
        detail = f"attempts: {run.attempts}; last: {detail}"
    detail = "; ".join(x for x in (context, detail) if x)
    return Result(label, outcome, [], tokens, seconds, detail=detail, rewinds=rewinds)


def configure(config: AppConfig, args: argparse.Namespace) -> str:
    """The profile to bench, with the command line's overrides applied in ``config``."""
    name = args.profile or config.default_model
    if args.gguf:
        name = "bench-gguf"
        base = config.profile(config.default_model)
        config.models[name] = LlamaCppProfile(
            backend="llama_cpp",
            model_path=str(Path(args.gguf).expanduser().resolve()),
            chat_format=args.chat_format,
            n_ctx=base.n_ctx,
            max_tokens=base.max_tokens,
        )
    profile = config.profile(name)
    update: dict[str, Any] = {}
    for key in ("dry_multiplier", "dry_allowed_length", "temperature", "repeat_penalty"):
        value = getattr(args, key)
        if value is not None:
            update[key] = value
    if args.dry_breakers is not None:
        update["dry_sequence_breakers"] = [b for b in args.dry_breakers.split(",") if b]
    if args.no_examples:
        update["prompt_examples"] = False
    if args.n_threads is not None and isinstance(profile, LlamaCppProfile):
        update["n_threads"] = args.n_threads
    if args.backtrack is not None and isinstance(profile, LlamaCppProfile):
        update["backtrack"] = args.backtrack
    if args.n_ctx is not None:
        update["n_ctx"] = args.n_ctx
    if update:
        config.models[name] = type(profile).model_validate({**profile.model_dump(), **update})
    return name


def selected(args: argparse.Namespace) -> list[tuple[str, int]]:
    names = list(SETS) if args.set == "all" else [args.set]
    picks = [(s, n) for s in names for n in SETS[s][1]]
    if args.issues:
        wanted = set()
        for item in args.issues.split(","):
            set_name, _sep, num = item.strip().rpartition(":")
            wanted.add((set_name or None, int(num)))
        picks = [(s, n) for s, n in picks if (s, n) in wanted or (None, n) in wanted]
    return picks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="demo", choices=[*SETS, "all"])
    parser.add_argument("--issues", help="e.g. 1,3 or demo:1,shop:2")
    parser.add_argument("--profile", help="model profile (default: the default model)")
    parser.add_argument("--gguf", help="bench this GGUF instead (a llama_cpp profile)")
    parser.add_argument("--chat-format", default=None, help="chat_format for --gguf")
    parser.add_argument("--dry-multiplier", type=float, default=None)
    parser.add_argument("--dry-allowed-length", type=int, default=None)
    parser.add_argument("--dry-breakers", default=None, help="comma-separated; '' for none")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--repeat-penalty", type=float, default=None)
    parser.add_argument("--no-examples", action="store_true", help="prompt_examples = false")
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--backtrack", type=int, default=None, help="rewinds per answer; 0: off")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument(
        "--n-ctx", type=int, default=None, help="context window (a smaller one leaves files out)"
    )
    parser.add_argument(
        "--no-outlines",
        action="store_true",
        help="leave out a file that does not fit instead of showing its outline",
    )
    parser.add_argument("--no-tests", action="store_true", help="do not run the repo's tests")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--save", type=Path, help="write each raw answer into this directory")
    parser.add_argument(
        "--retries", type=int, default=0, help="retry a loop or truncation (new seed), as `r`"
    )
    args = parser.parse_args(argv)

    picks = selected(args)
    if not picks:
        parser.error("no issue selected")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="agent-tui-quality-") as tmp:
        root = Path(tmp)
        repos: dict[str, Path] = {}
        host: ModelHost | None = None
        name = ""
        for set_name, number in picks:
            repo_kind = SETS[set_name][0]
            if repo_kind not in repos:
                repos[repo_kind] = make_demo(root) if repo_kind == "demo" else make_shop(root)
            repo = repos[repo_kind]
            config = load_config(repo, user_config=root / "no-user-config.toml")
            name = configure(config, args)
            if host is None:
                host = ModelHost(config)
            workspace = Workspace(repo, config, models=host)
            workspace.set_model(name)
            result = run_issue(
                workspace,
                set_name,
                number,
                tests=not args.no_tests,
                max_tokens=args.max_tokens,
                save=args.save,
                retries=args.retries,
                outlines=not args.no_outlines,
            )
            results.append(result)
            codes = ",".join(result.codes) or "-"
            print(
                f"{result.label:<14} {result.outcome:<9} errors: {codes:<40} "
                f"tokens {result.tokens:>5}  rewinds {result.rewinds:>3}  {result.seconds:6.1f}s  "
                f"tests: {result.tests}" + (f"  ({result.detail})" if result.detail else ""),
                flush=True,
            )
    ran = [r for r in results if r.tests in ("pass", "fail")]
    passed = sum(1 for r in ran if r.tests == "pass")
    clean = sum(1 for r in results if r.outcome == "clean")
    counts = {o: sum(1 for r in results if r.outcome == o) for o in ("looping", "truncated")}
    print(f"profile {name}; looping: {counts['looping']}, truncated: {counts['truncated']}")
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    print(f"tests pass: {passed}/{len(ran)}")
    print(f"clean proposals: {clean}/{len(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
