"""The first paint of the issue list imports only what that frame needs.

Why: Python imports are most of agent-tui's start (bench/tui_bench.py). The model runtime,
ghapi (it builds GitHub's whole API at import), detect-secrets, YAML, numpy, the context,
checks and publish machinery are imported on first use, after the list is on screen; from the
second start in a repository on, so are pydantic, the configuration and the engine's models
(the first frame is read from the issue cache: ``engine.issues.forge.firstframe``). A subprocess
runs ``agent-tui tui --repo REPO`` headless on a repository with a GitHub issue cache (the
forge at a closed port) and records ``sys.modules`` when the list is first painted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
#: what the first paint must not import from the second start on (the first frame is read
#: from the issue cache without them; they load right after it)
ABSENT_FROM_THE_SECOND_START = (
    "pydantic",
    "pydantic_core",
    "engine.core.config",
    "engine.core.models",
    "engine.flow.session",
    "engine.flow.issue_run",
    "engine.flow.run_events",
    "engine.issues.forge.base",
    "engine.issues.forge.cache",
    "engine.issues.forge.github",
    "engine.issues.forge.registry",
    "engine.core.events",
    "engine.generate.backends",
)
#: every engine/tui module the first paint may import from the second start on; a new one
#: must be added here on purpose
FIRST_PAINT_MODULES = frozenset(
    """engine engine.cli engine.cli.exitcodes engine.core engine.core.configfiles
    engine.core.errors engine.core.gitcmd engine.core.redact engine.core.resources
    engine.core.textsafe engine.core.trust engine.issues engine.issues.forge
    engine.issues.forge.firstframe engine.issues.issuefilter
    tui tui.app tui.cli tui.keymap tui.messages tui.screens tui.screens.base tui.screens.error
    tui.screens.issues tui.widgets tui.widgets.issue_table tui.widgets.status_bar""".split()
)
#: what a first start (no record of the last one: the configuration is loaded first) may
#: import on top
FIRST_START_MODULES = FIRST_PAINT_MODULES | frozenset(
    """engine.generate engine.publish engine.flow
    engine.generate.backends engine.generate.backends.base
    engine.core.config engine.core.events engine.core.models engine.issues.forge.base
    engine.issues.forge.cache engine.issues.forge.github engine.issues.forge.github_source
    engine.issues.forge.github_token engine.issues.forge.local engine.issues.forge.registry
    engine.publish.gitops engine.flow.session engine.flow.issue_run engine.flow.run_events
    engine.publish.store engine.publish.records engine.generate.discover""".split()
    # the history store (and its records): the issue list's state column reads it;
    # discovery's worker starts right after the first refresh
)

CHILD = """
import json, sys
import tui.cli
from tui.app import AgentTuiApp

seen = {}
init, run = AgentTuiApp.__init__, AgentTuiApp.run
def test_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.exit_on_first_paint = True
    seen["app"] = self
    mark = self.mark_first_paint
    def first_paint():
        seen.setdefault("modules", sorted(sys.modules))
        mark()
    self.mark_first_paint = first_paint
def test_run(self, *args, **kwargs):
    return run(self, headless=True, size=(100, 30))
AgentTuiApp.__init__, AgentTuiApp.run = test_init, test_run
assert tui.cli.main(["tui", "--repo", sys.argv[1]]) == 0
app = seen["app"]
print(json.dumps({
    "rows": app.first_paint_rows,
    "first_frame": app.first_frame is not None,
    "modules": seen["modules"],
}))
"""


def _repo_with_cache(tmp_path: Path) -> Path:
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
    return repo


def _first_paint(repo: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GH_TOKEN": "", "GITHUB_TOKEN": ""}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(repo)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def _ours(modules: list[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("engine", "tui")}


def test_first_paint_imports_only_what_the_frame_needs(tmp_path: Path) -> None:
    repo = _repo_with_cache(tmp_path)
    first = _first_paint(repo)  # no record of a last start: the configuration loads first
    assert first["rows"] == 3 and not first["first_frame"]
    # a package's import always registers its top-level name (a stray "httpx._main" entry
    # is some library probing, not httpx being imported)
    present = sorted(name for name in MUST_BE_ABSENT if name in first["modules"])
    assert present == [], f"imported before the first paint: {present}"
    new = sorted(_ours(first["modules"]) - FIRST_START_MODULES)
    assert new == [], f"new modules at the first start's first paint: {new}"

    second = _first_paint(repo)  # the first frame from the cache, the engine after it
    assert second["rows"] == 3 and second["first_frame"]
    present = sorted(
        name
        for name in (*MUST_BE_ABSENT, *ABSENT_FROM_THE_SECOND_START)
        if name in second["modules"]
    )
    assert present == [], f"imported before the first paint: {present}"
    new = sorted(_ours(second["modules"]) - FIRST_PAINT_MODULES)
    assert new == [], f"new modules at first paint: {new}"
