"""The proposal checks: a corpus of hostile and sloppy proposals (one per rule), property tests
that no accepted path leaves the repository, and real repositories with symlinks pointing out.

Proposals are built with ``model_construct`` so the pydantic model's own validation never
hides a rule: the checks must catch everything themselves.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.errors import ConfigError, InvalidProposalError, UnsafePathError
from engine.core.models import BRANCH_SUFFIX_PATTERN, ChangeProposal, FileChange
from engine.core.proposal_io import proposal_from_data
from engine.core.rules import ALWAYS_ON_CODES, CHECK_GROUPS, RULES
from engine.review.checks.conventions import slugify_branch
from engine.review.checks.fixes import apply_fixes
from engine.review.checks.orchestrator import run_checks
from engine.review.checks.paths import path_findings, safe_target
from engine.review.checks.registry import CheckLimits, Finding, enabled_for_profile, has_errors
from engine.review.diff import RepoBase
from tests.conftest import git

ISSUE = 7
ITEMS = "backend/app/api/items.py"

BASE_ITEMS = '''"""Item routes."""

from fastapi import APIRouter, Depends

from app.database import get_db
from app.schemas import ItemOut

router = APIRouter()


@router.get("/items/{item_id}", response_model=ItemOut)
def read_item(item_id: int, db=Depends(get_db)):
    """Return one item."""
    return db.get(ItemOut, item_id)


def double(value: int) -> int:
    return value * 2
'''

GOOD_ITEMS = (
    BASE_ITEMS.replace(
        "from app.schemas import ItemOut",
        "from app import crud\nfrom app.schemas import ItemIn, ItemOut",
    )
    + '''

@router.post("/items", response_model=ItemOut, status_code=201)
def create_item(item: ItemIn, db=Depends(get_db)):
    """Create an item."""
    return crud.create_item(db, item)
'''
)

GOOD_TEST = """from fastapi.testclient import TestClient

from app.main import app

client = TestClient(app)


def test_create_item():
    response = client.post("/items", json={"name": "x"})
    assert response.status_code == 201
"""

BASE_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "demo"
version = "0.1.0"
dependencies = ["fastapi"]
"""


def _commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real repository full of traps, next to a directory outside it.

    Symlinks: ``out_abs`` (absolute, outside), ``out_rel`` (relative, outside), ``in_link``
    (to ``docs``, inside), ``loop`` (to itself), ``git_link`` (to ``.git``), ``dangling_out``
    (to a missing file outside), ``tree_only_out`` (committed, then deleted from the working
    tree: only the base tree knows it), plus a FIFO.
    """
    top = tmp_path_factory.mktemp("world")
    outside = top / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("do not touch\n")
    repo = top / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# demo\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.md").write_text("guide\n")
    api = repo / "backend" / "app" / "api"
    api.mkdir(parents=True)
    (api / "items.py").write_text(BASE_ITEMS)
    (repo / "backend" / "app" / "main.py").write_text("app = None\n")
    (repo / "backend" / "requirements.txt").write_text("fastapi>=0.110\nsqlalchemy\nhttpx\n")
    (repo / "pyproject.toml").write_text(BASE_PYPROJECT)
    (repo / "binary.dat").write_bytes(b"\xff\xfe\x00\x01")
    os.symlink(str(outside), repo / "out_abs")
    os.symlink("../outside", repo / "out_rel")
    os.symlink("docs", repo / "in_link")
    os.symlink("loop", repo / "loop")
    os.symlink(".git", repo / "git_link")
    os.symlink(str(outside / "missing.txt"), repo / "dangling_out")
    os.symlink("../outside", repo / "tree_only_out")
    _commit(repo, "initial")
    (repo / "tree_only_out").unlink()
    os.mkfifo(repo / "fifo")
    (repo / "docs" / "scratch.md").write_text("local notes, never committed\n")
    return {"repo": repo, "outside": outside}


@pytest.fixture(scope="module")
def base(world: dict[str, Path]) -> RepoBase:
    return RepoBase(world["repo"])


_DEFAULT_FILES = object()


def make(files: Any = _DEFAULT_FILES, **overrides: Any) -> ChangeProposal:
    """A clean proposal for issue 7, with fields replaced by ``overrides``.

    ``files`` items are (path, content) pairs, or anything else to be passed through as is.
    """
    if files is _DEFAULT_FILES:
        files = [(ITEMS, GOOD_ITEMS), ("backend/tests/test_items.py", GOOD_TEST)]
    if isinstance(files, list):
        files = [
            FileChange.model_construct(path=f[0], content=f[1]) if isinstance(f, tuple) else f
            for f in files
        ]
    data: dict[str, Any] = {
        "branch_suffix": "add-items-endpoint",
        "commit_message": "feat: add the create-item endpoint",
        "pr_title": "feat: create items",
        "pr_body": "## Summary\n\nAdds POST /items.\n\nCloses #7\n",
        **overrides,
    }
    return ChangeProposal.model_construct(**data, files=files)


def check(world: dict[str, Path], base: RepoBase, proposal: Any, **kw: Any) -> list[Finding]:
    kw.setdefault("shown_files", {ITEMS})
    return run_checks(proposal, world["repo"], ISSUE, base=base, **kw)


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def test_clean_proposal_has_no_findings(world: dict[str, Path], base: RepoBase) -> None:
    findings = check(world, base, make())
    assert findings == [], [f.render() for f in findings]
    # the same proposal is valid for the pydantic model too: the corpus starts from sanity
    ChangeProposal.model_validate(apply_fixes(make(), ISSUE).model_dump())


# --------------------------------------------------------------------------------------
# the corpus: one hostile or sloppy proposal per rule, each expecting its code
# --------------------------------------------------------------------------------------

LIMITS_SMALL = CheckLimits(max_files=2, max_file_bytes=100, max_total_bytes=150)
AWS = "AKIA" + "IOSFODNN7" + "EXAMPLE"
PRIVATE_KEY = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
)
GH_TOKEN = "ghp_" + "wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx"


def one(path: str, content: str = "x = 1\n") -> list[tuple[str, str]]:
    """The clean files plus one more."""
    return [(ITEMS, GOOD_ITEMS), ("backend/tests/test_items.py", GOOD_TEST), (path, content)]


Case = tuple[str, Callable[[], ChangeProposal], dict[str, Any]]

CORPUS: list[Case] = [
    # the proposal's shape
    ("proposal-malformed", lambda: make(files=None), {}),
    ("proposal-malformed", lambda: make(branch_suffix=None), {}),
    ("proposal-malformed", lambda: make(files=[(5, "x")]), {}),
    ("proposal-malformed", lambda: make(files=[("a.py", b"bytes")]), {}),
    ("proposal-malformed", lambda: make(files=[{"path": "a.py"}, 42]), {}),
    ("no-files", lambda: make(files=[]), {}),
    ("too-many-files", lambda: make(files=one("c.py")), {"limits": LIMITS_SMALL}),
    # paths
    ("path-empty", lambda: make(files=one("")), {}),
    ("path-empty", lambda: make(files=one("   ")), {}),
    ("path-control-char", lambda: make(files=one("a\x00b.py")), {}),
    ("path-control-char", lambda: make(files=one("a\nb.py")), {}),
    ("path-control-char", lambda: make(files=one("a\udc80.py")), {}),
    ("path-control-char", lambda: make(files=one("invoice\u202egnp.py")), {}),
    ("path-control-char", lambda: make(files=one("a\x9b31m.py")), {}),
    ("path-backslash", lambda: make(files=one("backend\\app\\x.py")), {}),
    ("path-backslash", lambda: make(files=one("..\\..\\x.py")), {}),
    ("path-absolute", lambda: make(files=one("/etc/passwd")), {}),
    ("path-absolute", lambda: make(files=one("//server/share/x")), {}),
    ("path-drive", lambda: make(files=one("C:/Windows/x.py")), {}),
    ("path-drive", lambda: make(files=one("c:x.py")), {}),
    ("path-traversal", lambda: make(files=one("../x.py")), {}),
    ("path-traversal", lambda: make(files=one("docs/../../outside/victim.txt")), {}),
    ("path-not-normalised", lambda: make(files=one("./a.py")), {}),
    ("path-not-normalised", lambda: make(files=one("a//b.py")), {}),
    ("path-not-normalised", lambda: make(files=one("docs/")), {}),
    ("path-too-long", lambda: make(files=one("a" * 300 + ".py")), {}),
    ("path-too-long", lambda: make(files=one("/".join(["abcdefgh"] * 200))), {}),
    ("path-too-long", lambda: make(files=one("app/" + "a" * 70 + ".py")), {}),
    ("path-too-long", lambda: make(files=one("/".join(["abcdefghij"] * 11) + "/" + "b" * 90)), {}),
    ("path-not-portable", lambda: make(files=one("app/m\u0430in.py")), {}),  # Cyrillic а
    ("path-not-portable", lambda: make(files=one("app/my file.py")), {}),
    ("path-not-portable", lambda: make(files=one("café.py")), {}),
    ("path-segment-start", lambda: make(files=one("-rf.py")), {}),
    ("path-segment-start", lambda: make(files=one("app/-x/y.py")), {}),
    ("path-too-deep", lambda: make(files=one("/".join("abcdefghijklm") + ".py")), {}),
    ("path-git-dir", lambda: make(files=one(".git/hooks/pre-commit")), {}),
    ("path-git-dir", lambda: make(files=one(".GIT/config")), {}),
    ("path-git-dir", lambda: make(files=one("sub/.git/config")), {}),
    ("path-git-dir", lambda: make(files=one(".git./config")), {}),
    ("path-git-dir", lambda: make(files=one(".git")), {}),
    ("path-symlink-escape", lambda: make(files=one("out_abs/victim.txt")), {}),
    ("path-symlink-escape", lambda: make(files=one("out_rel/new.txt")), {}),
    ("path-symlink-escape", lambda: make(files=one("dangling_out")), {}),
    ("path-symlink-escape", lambda: make(files=one("git_link/hooks/pre-commit")), {}),
    ("path-symlink-escape", lambda: make(files=one("tree_only_out/new.txt")), {}),
    ("path-unresolvable", lambda: make(files=one("loop/x.py")), {}),
    ("path-unresolvable", lambda: make(files=one("loop")), {}),
    ("path-through-symlink", lambda: make(files=one("in_link/new.md", "new\n")), {}),
    ("path-is-directory", lambda: make(files=one("docs")), {}),
    ("path-is-directory", lambda: make(files=one("backend/app")), {}),
    ("path-not-regular-file", lambda: make(files=one("fifo")), {}),
    ("path-parent-is-file", lambda: make(files=one("README.md/x.py")), {}),
    (
        "path-parent-is-file",
        lambda: make(files=[("a.py", "x = 1\n"), ("a.py/b.py", "y = 2\n")]),
        {},
    ),
    ("path-duplicate", lambda: make(files=[("a.py", "x = 1\n"), ("a.py", "x = 2\n")]), {}),
    ("path-duplicate", lambda: make(files=[("a.py", "x = 1\n"), ("./a.py", "x = 2\n")]), {}),
    ("path-case-conflict", lambda: make(files=[("Notes.md", "a\n"), ("notes.md", "b\n")]), {}),
    (
        "path-case-conflict",
        lambda: make(
            files=[
                (unicodedata.normalize("NFC", "café.md"), "a\n"),
                (unicodedata.normalize("NFD", "café.md"), "b\n"),
            ]
        ),
        {},
    ),
    ("path-case-existing", lambda: make(files=one("readme.md", "# hi\n")), {}),
    # content
    ("file-too-large", lambda: make(files=[("a.md", "x" * 120 + "\n")]), {"limits": LIMITS_SMALL}),
    (
        "total-too-large",
        lambda: make(files=[("a.md", "x" * 90 + "\n"), ("b.md", "y" * 90 + "\n")]),
        {"limits": LIMITS_SMALL},
    ),
    ("content-not-utf8", lambda: make(files=one("a.py", "x = '\ud800'\n")), {}),
    ("content-not-text", lambda: make(files=one("a.py", "x = 1\x00\n")), {}),
    ("content-not-text", lambda: make(files=one("a.txt", "bell\x07\n")), {}),
    ("secret-in-content", lambda: make(files=one("a.py", f'AWS_KEY = "{AWS}"\n')), {}),
    ("secret-in-content", lambda: make(files=one("deploy/key.txt", PRIVATE_KEY)), {}),
    (
        "secret-in-content",
        lambda: make(files=one("app/config.py", 'password = "hunter2-is-my-password"\n')),
        {},
    ),
    (
        "secret-in-content",
        lambda: make(files=one("app/security.py", 'JWT_SECRET_KEY = "change-me-0123456789"\n')),
        {},
    ),
    (
        "secret-high-entropy",
        lambda: make(files=one("a.py", 'CHECKSUM = "3f786850e387550fdab836ed7e6dc881de23001b"\n')),
        {},
    ),
    ("secret-in-message", lambda: make(pr_body=f"Closes #7\n\ntoken: {GH_TOKEN}\n"), {}),
    ("secret-in-message", lambda: make(commit_message=f"fix: use key {AWS}"), {}),
    ("message-control-char", lambda: make(pr_title="feat: x\x1b]8;;http://evil\x07y"), {}),
    ("commit-message-length", lambda: make(commit_message="feat: " + "x" * 120), {}),
    ("commit-message-length", lambda: make(commit_message="   "), {}),
    ("pr-title-length", lambda: make(pr_title=""), {}),
    ("pr-title-length", lambda: make(pr_title="feat: " + "y" * 120), {}),
    ("pr-body-length", lambda: make(pr_body="Closes #7\n" + "z" * 70_000), {}),
    ("message-control-char", lambda: make(pr_body="Closes #7\n\x1b[2J\u202e"), {}),
    ("message-control-char", lambda: make(commit_message="feat: a\rb"), {}),
    ("message-trailer", lambda: make(commit_message="feat: x\n\nAgent-Tui-Model: gpt-9"), {}),
    ("message-trailer", lambda: make(commit_message="feat: x\n\nSigned-off-by: Linus <l@x>"), {}),
    # sensitive paths
    ("sensitive-ci", lambda: make(files=one(".github/workflows/ci.yml", "on: push\n")), {}),
    ("sensitive-ci", lambda: make(files=one(".gitlab-ci.yml", "test:\n  script: make\n")), {}),
    ("sensitive-git-hooks", lambda: make(files=one(".githooks/pre-commit", "echo hi\n")), {}),
    ("sensitive-git-hooks", lambda: make(files=one(".pre-commit-config.yaml", "repos: []\n")), {}),
    ("sensitive-gitattributes", lambda: make(files=one(".gitattributes", "*.py -diff\n")), {}),
    ("sensitive-dev-env", lambda: make(files=one(".envrc", "export X=1\n")), {}),
    ("sensitive-dev-env", lambda: make(files=one(".vscode/tasks.json", "{}\n")), {}),
    ("sensitive-agent-config", lambda: make(files=one(".agent-tui.toml", "[tui]\n")), {}),
    ("sensitive-agent-config", lambda: make(files=one(".agent-tui/prompts/x.md", "hi\n")), {}),
    ("sensitive-test-config", lambda: make(files=one("tests/conftest.py", "x = 1\n")), {}),
    ("sensitive-docker", lambda: make(files=one("Dockerfile", "FROM python:3.12\n")), {}),
    (
        "sensitive-docker",
        lambda: make(files=one("backend/docker-compose.yml", "services: {}\n")),
        {},
    ),
    ("sensitive-build", lambda: make(files=one("setup.py", "from setuptools import setup\n")), {}),
    (
        "sensitive-build",
        lambda: make(
            files=one(
                "pyproject.toml", BASE_PYPROJECT.replace('"hatchling"]', '"hatchling", "evil"]')
            )
        ),
        {},
    ),
    ("sensitive-makefile", lambda: make(files=one("Makefile", "all:\n\techo hi\n")), {}),
    ("sensitive-makefile", lambda: make(files=one("build/rules.mk", "X = 1\n")), {}),
    ("sensitive-shell", lambda: make(files=one("scripts/deploy.sh", "echo hi\n")), {}),
    ("sensitive-shell", lambda: make(files=one("scripts/deploy", "#!/bin/bash\necho hi\n")), {}),
    ("sensitive-shell", lambda: make(files=one("run.ps1", "Write-Host hi\n")), {}),
    (
        "sensitive-dependencies",
        lambda: make(files=one("backend/requirements.txt", "fastapi\nevil\n")),
        {},
    ),
    ("sensitive-dependencies", lambda: make(files=one("package.json", '{"name": "x"}\n')), {}),
    (
        "sensitive-dependencies",
        lambda: make(
            files=one(
                "pyproject.toml", BASE_PYPROJECT.replace('["fastapi"]', '["fastapi", "evil"]')
            )
        ),
        {},
    ),
    # destructive rewrites
    ("destructive-drop-lines", lambda: make(files=[(ITEMS, "router = None\n")]), {}),
    (
        "destructive-removed-definitions",
        lambda: make(
            files=[
                (
                    ITEMS,
                    GOOD_ITEMS.replace(
                        "def double(value: int) -> int:\n    return value * 2\n", ""
                    ),
                ),
                ("backend/tests/test_items.py", GOOD_TEST),
            ]
        ),
        {},
    ),
    (
        "destructive-removed-definitions",
        lambda: make(
            files=[
                (
                    ITEMS,
                    GOOD_ITEMS.replace(
                        '@router.get("/items/{item_id}"', '@router.get("/item/{item_id}"'
                    ),
                ),
                ("backend/tests/test_items.py", GOOD_TEST.replace("/items", "/item")),
            ]
        ),
        {},
    ),
    ("unseen-file-rewritten", lambda: make(), {"shown_files": set()}),
    ("unchanged-file", lambda: make(files=one("README.md", "# demo\n")), {}),
    ("uncommitted-changes", lambda: make(files=one("docs/scratch.md", "notes\n")), {}),
    # the seed's rules
    ("branch-suffix-invalid", lambda: make(branch_suffix="Add_Items"), {}),
    ("branch-suffix-invalid", lambda: make(branch_suffix="a" * 31), {}),
    ("branch-suffix-invalid", lambda: make(branch_suffix="-items-"), {}),
    ("branch-suffix-invalid", lambda: make(branch_suffix="feature/items"), {}),
    ("branch-suffix-invalid", lambda: make(branch_suffix=""), {}),
    ("closes-missing", lambda: make(pr_body="Adds items."), {}),
    ("closes-missing", lambda: make(pr_body="Closes #70"), {}),
    ("closes-missing", lambda: make(pr_body="Closes #ISSUE_NUMBER"), {}),
    ("closes-missing", lambda: make(pr_body="Refs #7"), {}),
    ("closes-other-issue", lambda: make(pr_body="Closes #7\nFixes #8\n"), {}),
    ("commit-message-style", lambda: make(commit_message="Added the endpoint"), {}),
    ("commit-message-style", lambda: make(commit_message="feat:no space"), {}),
    ("pr-title-style", lambda: make(pr_title="Create items"), {}),
    (
        "placeholder-content",
        lambda: make(files=one("a.py", "x = 1\n# ... existing code ...\n")),
        {},
    ),
    ("placeholder-content", lambda: make(files=one("a.py", "# rest of the file unchanged\n")), {}),
    ("placeholder-content", lambda: make(files=one("a.py", "def f():\n    pass  # TODO\n")), {}),
    ("placeholder-content", lambda: make(files=one("a.js", "// ...\nlet x = 1;\n")), {}),
    (
        "placeholder-content",
        lambda: make(files=one("a.md", "Intro\n\n(omitted for brevity)\n")),
        {},
    ),
    ("python-syntax-error", lambda: make(files=one("a.py", "def f(:\n    return 1\n")), {}),
    ("data-syntax-error", lambda: make(files=one("a.json", '{"a": 1,}\n')), {}),
    ("data-syntax-error", lambda: make(files=one("a.toml", "a = \n")), {}),
    ("data-syntax-error", lambda: make(files=one("a.yaml", "a: [1, 2\nb: 3\n")), {}),
    ("truncated-content", lambda: make(files=one("a.py", "def f():\n    return g(1,\n")), {}),
    ("truncated-content", lambda: make(files=one("a.py", 'def f():\n    """Doc\n')), {}),
    ("truncated-content", lambda: make(files=one("a.js", "function f() {\n  return 1;\n")), {}),
    ("truncated-content", lambda: make(files=one("a.ini", "[x]\nkey = a,\n")), {}),
    ("truncated-content", lambda: make(files=one("a.md", "Intro\n```python\nx = 1\n")), {}),
    ("missing-final-newline", lambda: make(files=one("a.py", "x = 1")), {}),
    (
        "endpoint-without-test",
        lambda: make(files=[(ITEMS, GOOD_ITEMS)]),
        {},
    ),
    (
        "missing-requirement",
        lambda: make(files=one("backend/app/util.py", "import requests\n")),
        {},
    ),
    (
        "missing-requirement",
        lambda: make(files=one("backend/app/util.py", "from jose import jwt\n")),
        {},
    ),
    (
        "route-missing-docstring",
        lambda: make(
            files=[
                (ITEMS, GOOD_ITEMS.replace('    """Create an item."""\n', "")),
                ("backend/tests/test_items.py", GOOD_TEST),
            ]
        ),
        {},
    ),
    (
        "orm-returned-raw",
        lambda: make(
            files=[
                (
                    ITEMS,
                    GOOD_ITEMS + '\n\n@router.get("/items")\ndef list_items(db=Depends(get_db)):\n'
                    '    """List items."""\n    rows = db.query(ItemOut).all()\n    return rows\n',
                ),
                (
                    "backend/tests/test_items.py",
                    GOOD_TEST + '\n\ndef test_list():\n    client.get("/items")\n',
                ),
            ]
        ),
        {},
    ),
]


NON_SECRET_CODES = {c for c in RULES if not c.startswith("secret-")}


def _case_id(case: Case) -> str:
    return case[0]


@pytest.mark.parametrize("case", CORPUS, ids=[_case_id(c) for c in CORPUS])
def test_corpus(world: dict[str, Path], base: RepoBase, case: Case) -> None:
    code, build, kwargs = case
    if not code.startswith("secret-"):
        # the secret scan is the slow part (~10 ms a file); the clean and quiet tests below
        # run every rule, so here it runs only for the secret cases
        kwargs = {**kwargs, "enabled": NON_SECRET_CODES}
    findings = check(world, base, build(), **kwargs)
    hits = [f for f in findings if f.code == code]
    assert hits, f"expected {code}, got {[f.render() for f in findings]}"
    rule = RULES[code]
    for f in hits:
        assert f.severity == rule.severity
        assert f.fixable == rule.fixable
        assert f.message and f.fix, f"{code} must say what is wrong and how to fix it"


def test_corpus_covers_every_rule() -> None:
    assert {c[0] for c in CORPUS} == set(RULES)


def test_every_rule_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Checks", 1)[1].split("\n## ", 1)[0]
    for code in RULES:
        assert f"`{code}`" in section, f"README's Checks section lacks {code}"


# --------------------------------------------------------------------------------------
# heuristics that must stay quiet on ordinary code
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("backend/app/util.py", "import os\nimport json\nfrom . import x\nfrom app import crud\n"),
        ("backend/app/util.py", "import sqlalchemy\nimport fastapi.responses\n"),
        ("backend/app/proto.py", "class P:\n    def f(self) -> int: ...\n"),
        ("docs/notes.md", "Some text, with a comma at the end,\n"),
        ("backend/app/os_env.py", 'import os\n\nPASSWORD = os.getenv("DB_PASSWORD")\n'),
        ("backend/app/calls.py", "def f():\n    return g(\n        1,\n    )\n"),
        ("backend/app/ui.py", 'MSG = "Loading... more items, see ... other docs"\n'),
        ("web/app.js", "function f() {\n  const s = '{';\n  return s; // }\n}\n"),
    ],
)
def test_quiet_on_ordinary_code(
    world: dict[str, Path], base: RepoBase, path: str, content: str
) -> None:
    findings = check(world, base, make(files=one(path, content)))
    assert findings == [], [f.render() for f in findings]


def test_pr_body_closing_the_right_issue_in_any_case(
    world: dict[str, Path], base: RepoBase
) -> None:
    assert "closes-missing" not in codes(check(world, base, make(pr_body="closes #7")))
    assert "closes-missing" in codes(check(world, base, make(pr_body="closes #77")))


def test_secret_already_in_the_base_is_not_blamed_on_the_model(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "settings.py").write_text(f'AWS_KEY = "{AWS}"\nDEBUG = False\n')
    _commit(repo, "init")
    prop = make(files=[("settings.py", f'AWS_KEY = "{AWS}"\nDEBUG = True\n')])
    found = codes(run_checks(prop, repo, ISSUE))
    assert "secret-in-content" not in found
    prop = make(files=[("settings.py", f'AWS_KEY = "{AWS}"\nOTHER = "{AWS[:-1]}Q"\n')])
    assert "secret-in-content" in codes(run_checks(prop, repo, ISSUE))


def test_findings_are_sorted_errors_first(world: dict[str, Path], base: RepoBase) -> None:
    prop = make(branch_suffix="BAD", commit_message="nope", files=one("Makefile", "x:\n\ttrue"))
    findings = check(world, base, prop)
    order = [f.severity for f in findings]
    assert order == sorted(order, key={"error": 0, "warning": 1, "info": 2}.__getitem__)
    assert has_errors(findings)


def test_enabled_filters_codes_and_rejects_unknown(world: dict[str, Path], base: RepoBase) -> None:
    prop = make(branch_suffix="BAD", files=one("../x"))
    assert codes(check(world, base, prop, enabled={"path-traversal"})) == {"path-traversal"}
    with pytest.raises(ConfigError, match="no-such-code"):
        check(world, base, prop, enabled={"no-such-code"})


def test_limits_from_config_follow_generation_max_files(git_repo: Path) -> None:
    from engine.core.config import load_config

    (git_repo / ".agent-tui.toml").write_text("[generation]\nmax_files = 3\n")
    assert CheckLimits.from_config(load_config(git_repo)).max_files == 3


# --------------------------------------------------------------------------------------
# fixes
# --------------------------------------------------------------------------------------


def test_apply_fixes_fixes_what_it_says_and_nothing_else(
    world: dict[str, Path], base: RepoBase
) -> None:
    prop = make(
        branch_suffix="Add Items Endpoint (v2)!",
        pr_body="## Summary\n\nCloses #ISSUE_NUMBER\n",
        files=one("a.py", "x = 1"),
    )
    before = codes(check(world, base, prop))
    assert {"branch-suffix-invalid", "closes-missing", "missing-final-newline"} <= before
    fixed = apply_fixes(prop, ISSUE)
    assert fixed.branch_suffix == "add-items-endpoint-v2"
    assert fixed.pr_body == "## Summary\n\nCloses #7\n"
    assert fixed.files[2].content == "x = 1\n"
    assert check(world, base, fixed) == []
    # the original is untouched
    assert prop.branch_suffix == "Add Items Endpoint (v2)!"


def test_apply_fixes_keeps_unfixable_problems(world: dict[str, Path], base: RepoBase) -> None:
    prop = make(pr_body="", files=one("../evil.py", "x = 1\n"))
    fixed = apply_fixes(prop, ISSUE)
    assert fixed.pr_body == "Closes #7"
    found = codes(check(world, base, fixed))
    assert "path-traversal" in found and "closes-missing" not in found


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80), number=st.integers(min_value=1, max_value=10**6))
def test_slugify_always_gives_a_valid_suffix(text: str, number: int) -> None:
    slug = slugify_branch(text, number)
    assert re.fullmatch(BRANCH_SUFFIX_PATTERN, slug)


@settings(max_examples=200, deadline=None)
@given(
    branch=st.one_of(st.none(), st.text(max_size=50)),
    body=st.text(max_size=200),
    number=st.integers(min_value=1, max_value=99999),
)
def test_fixed_proposals_pass_the_fixable_rules(branch: str | None, body: str, number: int) -> None:
    from engine.review.checks.conventions import message_findings as _message_findings

    prop = ChangeProposal.model_construct(
        branch_suffix=branch, commit_message="feat: x", pr_title="feat: y", pr_body=body, files=[]
    )
    fixed = apply_fixes(prop, number)
    left = codes(_message_findings(fixed, number))
    assert not left & {"branch-suffix-invalid", "closes-missing"}


# --------------------------------------------------------------------------------------
# loading untrusted JSON
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        [],
        "proposal",
        {"branch_suffix": "x"},
        {
            "branch_suffix": "x",
            "commit_message": "c",
            "pr_title": "t",
            "pr_body": "b",
            "files": "not a list",
        },
        {
            "branch_suffix": 1,
            "commit_message": "c",
            "pr_title": "t",
            "pr_body": "b",
            "files": [],
        },
        {
            "branch_suffix": "x",
            "commit_message": "c",
            "pr_title": "t",
            "pr_body": "b",
            "files": [{"path": "a", "content": "b", "mode": "755"}],
            "extra": True,
        },
    ],
)
def test_proposal_from_data_rejects_wrong_shapes(data: object) -> None:
    with pytest.raises(InvalidProposalError) as info:
        proposal_from_data(data)
    assert info.value.hint


def test_proposal_from_data_keeps_hostile_values_for_the_checks() -> None:
    prop = proposal_from_data(
        {
            "branch_suffix": "NOT OK",
            "commit_message": "c",
            "pr_title": "t",
            "pr_body": "b",
            "files": [{"path": "../../etc/passwd", "content": "root::0:0\n"}],
        }
    )
    assert prop.files[0].path == "../../etc/passwd"


# --------------------------------------------------------------------------------------
# safe_target and the path property: nothing accepted resolves outside the repository
# --------------------------------------------------------------------------------------


def test_safe_target_refuses_every_escape(world: dict[str, Path]) -> None:
    repo = world["repo"]
    for bad in (
        "../x",
        "/etc/passwd",
        "out_abs/victim.txt",
        "out_rel/x",
        "dangling_out",
        "git_link/config",
        ".git/config",
        "loop/x",
        "docs",
        "fifo",
        "README.md/x",
        "a\x00b",
        "",
    ):
        with pytest.raises(UnsafePathError) as info:
            safe_target(repo, bad)
        assert info.value.title == "Unsafe path" and info.value.hint
    assert (world["outside"] / "victim.txt").read_text() == "do not touch\n"


def test_safe_target_resolves_inside(world: dict[str, Path]) -> None:
    repo = world["repo"].resolve()
    assert safe_target(repo, "backend/app/new.py") == repo / "backend/app/new.py"
    assert safe_target(repo, "in_link/new.md") == repo / "docs" / "new.md"
    assert safe_target(repo, "README.md") == repo / "README.md"


def test_safe_target_through_a_symlinked_repo_dir(world: dict[str, Path], tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    os.symlink(world["repo"], alias)
    assert safe_target(alias, "docs/x.md") == world["repo"].resolve() / "docs" / "x.md"
    with pytest.raises(UnsafePathError):
        safe_target(alias, "out_rel/x")


ATOMS = [
    "..", ".", "/", "//", "\\", ".git", ".GIT", ".git.", "out_abs", "out_rel", "in_link",
    "docs", "loop", "git_link", "dangling_out", "tree_only_out", "README.md", "fifo",
    "backend", "app", "a", "A", "\x00", "\n", ":", "C:", "~", " ", "é", "x.py",
]  # fmt: skip

paths = st.one_of(
    st.lists(st.sampled_from(ATOMS), min_size=1, max_size=8).map("".join),
    st.lists(st.sampled_from(ATOMS), min_size=1, max_size=6).map("/".join),
    st.text(max_size=40),
)


def _resolves_inside(repo: Path, raw: str) -> bool:
    root = os.path.realpath(repo)
    real = os.path.realpath(os.path.join(root, raw))
    if not real.startswith(root + os.sep):
        return False
    first = os.path.relpath(real, root).split(os.sep)[0]
    return first.rstrip(". ").casefold() != ".git"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=paths)
def test_no_accepted_path_resolves_outside(
    world: dict[str, Path], base: RepoBase, raw: str
) -> None:
    repo = world["repo"]
    # with the base tree too (run_checks): what is accepted stays inside
    findings = path_findings(raw, repo, base=base)
    if not any(f.severity == "error" for f in findings):
        assert _resolves_inside(repo, raw), (raw, findings)
    # the working tree alone (safe_target, in the publisher's worktree): same verdict
    fs_findings = path_findings(raw, repo)
    if not any(f.severity == "error" for f in fs_findings):
        assert _resolves_inside(repo, raw), (raw, fs_findings)
        target = safe_target(repo, raw)
        assert target == Path(os.path.realpath(os.path.join(os.path.realpath(repo), raw)))
    else:
        with pytest.raises(UnsafePathError):
            safe_target(repo, raw)


PATH_CODES = {c for c in RULES if c.startswith("path-")}


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raws=st.lists(paths, min_size=1, max_size=4))
def test_run_checks_accepts_only_paths_inside(
    world: dict[str, Path], base: RepoBase, raws: list[str]
) -> None:
    repo = world["repo"]
    prop = make(files=[(r, "x\n") for r in raws])
    findings = run_checks(prop, repo, ISSUE, base=base, enabled=PATH_CODES)
    refused = {f.path for f in findings if f.severity == "error"}
    for raw in raws:
        if raw not in refused:
            assert _resolves_inside(repo, raw), (raw, findings)


def test_uncommitted_changes_name_how_each_file_differs_from_head(tmp_path: Path) -> None:
    """Edited, staged, untracked and deleted files are flagged; a committed one is not."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for name in ("edited.py", "clean.py", "gone.py"):
        (repo / "pkg" / name).write_text(f"NAME = {name!r}\n")
    _commit(repo, "initial")
    (repo / "pkg" / "edited.py").write_text("NAME = 'local edit'\n")
    (repo / "pkg" / "staged.py").write_text("NAME = 'staged'\n")
    git(repo, "add", "pkg/staged.py")
    (repo / "pkg" / "untracked.py").write_text("NAME = 'untracked'\n")
    (repo / "pkg" / "gone.py").unlink()
    names = ["edited", "clean", "gone", "staged", "untracked"]
    proposal = make(files=[(f"pkg/{n}.py", f"NAME = {n!r}  # proposed\n") for n in names])
    found = {
        f.path: f.message
        for f in run_checks(proposal, repo, ISSUE, enabled={"uncommitted-changes"})
    }
    assert set(found) == {"pkg/edited.py", "pkg/gone.py", "pkg/staged.py", "pkg/untracked.py"}
    assert "uncommitted edits" in found["pkg/edited.py"]
    assert "deleted in your working tree" in found["pkg/gone.py"]
    assert "staged but not committed" in found["pkg/staged.py"]
    assert "untracked" in found["pkg/untracked.py"]
    # the same from a subdirectory: paths are relative to it, as the proposal's are
    sub = run_checks(
        make(files=[("edited.py", "x = 1\n"), ("clean.py", "x = 2\n")]),
        repo / "pkg",
        ISSUE,
        enabled={"uncommitted-changes"},
    )
    assert [f.path for f in sub] == ["edited.py"]
    # compared with the working tree itself (no git base), nothing is "uncommitted"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.py").write_text("x = 0\n")
    assert (
        run_checks(make(files=[("a.py", "x = 1\n")]), plain, ISSUE, enabled={"uncommitted-changes"})
        == []
    )


def test_profile_check_groups_name_real_rules_and_never_safety_ones() -> None:
    grouped = [c for codes in CHECK_GROUPS.values() for c in codes]
    assert len(grouped) == len(set(grouped)), "a rule in two groups"
    assert set(grouped) <= set(RULES)
    for code in ALWAYS_ON_CODES:
        assert code.startswith(
            ("path-", "secret-", "sensitive-", "destructive-", "content-", "message-")
        ) or code in {
            "proposal-malformed",
            "no-files",
            "too-many-files",
            "file-too-large",
            "total-too-large",
            "unseen-file-rewritten",
            "unchanged-file",
            "uncommitted-changes",
            "commit-message-length",  # the proposal model's bounds: publishing needs them
            "pr-title-length",
            "pr-body-length",
        }, code
    # the README's group table is the same as the code's
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### Which rules a profile turns on", 1)[1].split("\n### ", 1)[0]
    documented = {
        row.split("|")[1].strip().strip("`"): [
            c.strip().strip("`") for c in row.split("|")[2].split(",")
        ]
        for row in table.splitlines()
        if row.startswith("| `")
    }
    assert documented == {g: list(codes) for g, codes in CHECK_GROUPS.items()}


def test_a_profile_selects_its_convention_rules_and_keeps_the_safety_ones(
    world: dict[str, Path], base: RepoBase
) -> None:
    assert enabled_for_profile([]) is None
    enabled = enabled_for_profile(["branch-suffix", "missing-final-newline"])
    assert enabled is not None
    assert {"branch-suffix-invalid", "missing-final-newline", "path-traversal"} <= enabled
    assert "closes-missing" not in enabled and "endpoint-without-test" not in enabled
    sloppy = make(
        branch_suffix="Bad_Suffix",
        pr_body="no closing keyword",
        files=[("../escape.py", "x = 1\n"), ("docs/new.md", "no newline")],
    )
    found = codes(check(world, base, sloppy, enabled=enabled))
    assert {"branch-suffix-invalid", "missing-final-newline", "path-traversal"} <= found
    assert "closes-missing" not in found
    assert "closes-missing" in codes(check(world, base, sloppy))
    with pytest.raises(ConfigError, match="'nope'"):
        enabled_for_profile(["nope"])


def test_the_default_profile_turns_on_every_rule() -> None:
    from engine.context.prompts import load_profile

    enabled = enabled_for_profile(load_profile().checks)
    assert enabled == set(RULES)
