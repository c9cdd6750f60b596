"""The first paint of the issue list imports only what that frame needs.

Why: Python imports are most of agent-tui's start (bench/tui_bench.py). The model runtime,
ghapi (it builds GitHub's whole API at import), detect-secrets, YAML, numpy, the context,
checks and publish machinery are imported on first use, after the list is on screen. A
subprocess opens the app headless on a repository with a GitHub issue cache (the forge at
a closed port) and records ``sys.modules`` when the list is first painted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.core.config import load_config
from engine.core.models import Issue
from engine.issues.forge.registry import issue_source_for
from tests.conftest import REPO_ROOT, trust_repo_config

#: heavy modules the first paint must not import (top-level packages or engine/tui modules)
MUST_BE_ABSENT = (
    "llama_cpp",
    "llguidance",
    "ghapi",
    "fastcore",
    "httpx",
    "detect_secrets",
    "yaml",
    "numpy",
    "tokenizers",
    "engine.context.build",
    "engine.context.snapshot",
    "engine.context.index",
    "engine.context.secrets_scan",
    "engine.context.secrets_prefilter",
    "engine.review.checks",
    "engine.publish.runner",
    "engine.publish.plan",
    "engine.publish.provenance",
    "engine.publish.steps",
    "engine.generate.stream",
    "engine.generate.grammar",
    "engine.flow.batch",
    "engine.flow.batch_items",
    "engine.context.prompts",
    "engine.review.diff",
    "engine.flow.doctor",
    "engine.generate.backends.llama_cpp",
    "engine.generate.decode",
    "engine.generate.sampling",
    "engine.generate.llama_model",
    "engine.generate.tokens",
    "engine.generate.backends.server",
    "engine.generate.backends.http",
    "engine.generate.backends.ollama",
    "engine.generate.backends.openai_compat",
    "tui.screens.generating",
    "tui.screens.preview",
    "tui.screens.publish_plan",
    "tui.screens.history",
    "tui.widgets.diff_view",
)
#: every engine/tui module the first paint may import; a new one must be added here on purpose
FIRST_PAINT_MODULES = frozenset(
    """engine engine.core engine.issues engine.generate engine.publish engine.flow
    engine.generate.backends engine.generate.backends.base engine.cli engine.cli.exitcodes
    engine.core.config engine.core.errors engine.core.events engine.issues.forge
    engine.issues.forge.base engine.issues.forge.cache engine.issues.forge.github
    engine.issues.forge.github_source engine.issues.forge.github_token
    engine.issues.forge.local engine.issues.forge.registry engine.publish.gitops engine.core.gitcmd
    engine.issues.issuefilter engine.core.models engine.core.resources engine.flow.session
    engine.flow.issue_run engine.flow.run_events
    tui tui.app tui.cli tui.keymap tui.messages tui.screens tui.screens.base tui.screens.error
    tui.screens.issues tui.widgets tui.widgets.issue_table tui.widgets.status_bar
    engine.core.textsafe engine.core.redact engine.core.trust engine.publish.store
    engine.publish.records engine.generate.discover""".split()
    # the last two lines, ~20 ms together (stdlib only): untrusted titles are escaped and an
    # untrusted repository config is noticed in the first frame; the issue list's state column
    # reads the history store (and its records); discovery's worker starts right after the
    # first refresh
)

CHILD = """
import json, sys
import tui.cli
from pathlib import Path
from engine.core.config import load_config
from tui.app import AgentTuiApp

repo = Path(sys.argv[1])
app = AgentTuiApp(repo, load_config(repo))
app.exit_on_first_paint = True
seen = {}
mark = app.mark_first_paint
def first_paint():
    seen.setdefault("modules", sorted(sys.modules))
    mark()
app.mark_first_paint = first_paint
app.run(headless=True, size=(100, 30))
print(json.dumps({"rows": app.first_paint_rows, "modules": seen["modules"]}))
"""


def _first_paint_modules(tmp_path: Path) -> tuple[int, set[str]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / ".agent-tui.toml").write_text(
        '[github]\napi_url = "http://127.0.0.1:9/api/v3"\nrepo = "acme/widgets"\ntimeout = 2\n'
    )
    trust_repo_config(repo)  # a repository's [github] api_url applies once trusted
    source = issue_source_for(repo, load_config(repo), use_gh_cli=False)
    cache = getattr(source, "cache", None)
    assert cache is not None, f"expected the GitHub source, got {source!r}"
    cache.upsert([Issue(number=n, title=f"issue {n}", source="github") for n in (1, 2, 3)])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(repo)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["rows"], set(data["modules"])


def test_first_paint_imports_only_what_the_frame_needs(tmp_path: Path) -> None:
    rows, modules = _first_paint_modules(tmp_path)
    assert rows == 3  # the cached issues were painted
    # a package's import always registers its top-level name (a stray "httpx._main" entry
    # is some library probing, not httpx being imported)
    present = sorted(name for name in MUST_BE_ABSENT if name in modules)
    assert present == [], f"imported before the first paint: {present}"
    ours = {m for m in modules if m.split(".")[0] in ("engine", "tui")}
    assert ours <= FIRST_PAINT_MODULES, (
        f"new modules at first paint: {sorted(ours - FIRST_PAINT_MODULES)}"
    )
