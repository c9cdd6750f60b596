"""Code rules on Python files: endpoint tests, route docstrings, ORM responses, requirements.

Why: the Backend Dev Agent's conventions for a FastAPI-style backend (a new route comes with
a test, a handler says what it does, a handler returns a schema rather than a query result,
a new import is declared in requirements). Each rule looks only at what the proposal adds:
a route, import or raw return already in the base version is not the model's doing. The
syntax trees come from ``content`` (``ProposedFile.tree``); a file that does not parse is
reported there and skipped here. ``definitions`` and ``safe_parse`` also serve ``rewrites``.
"""

from __future__ import annotations

import ast
import posixpath
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata

from engine.core import pysource
from engine.review.checks.registry import Finding, ProposedFile, extension, finding
from engine.review.checks.sensitive import REQ_NAME_RE
from engine.review.diff import RepoBase

_ROUTE_METHODS = {
    "get", "post", "put", "patch", "delete", "head", "options", "trace", "route", "api_route",
    "websocket",
}  # fmt: skip


@dataclass(frozen=True)
class _Route:
    method: str
    path: str
    handler: str
    line: int
    node: ast.FunctionDef | ast.AsyncFunctionDef = field(compare=False, hash=False)
    response_model: bool = field(default=False, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.method.upper()} {self.path}"


def _routes(tree: ast.Module) -> list[_Route]:
    found: list[_Route] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for dec in node.decorator_list:
            if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)):
                continue
            if dec.func.attr not in _ROUTE_METHODS:
                continue
            route_path: str | None = None
            if dec.args and isinstance(dec.args[0], ast.Constant):
                route_path = str(dec.args[0].value)
            for kw in dec.keywords:
                if kw.arg == "path" and isinstance(kw.value, ast.Constant):
                    route_path = str(kw.value.value)
            if route_path is None:
                continue
            has_model = any(kw.arg == "response_model" for kw in dec.keywords)
            found.append(_Route(dec.func.attr, route_path, node.name, node.lineno, node, has_model))
    return found


def definitions(tree: ast.Module) -> dict[str, int]:
    """Module-level functions and classes, and methods as ``Class.name`` -> line."""
    defs: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            defs[f"{node.name}()"] = node.lineno
        elif isinstance(node, ast.ClassDef):
            defs[f"class {node.name}"] = node.lineno
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                    defs[f"{node.name}.{sub.name}()"] = sub.lineno
    for route in _routes(tree):
        defs[f"route {route.key}"] = route.line
    return defs


def safe_parse(text: str | None) -> ast.Module | None:
    if text is None:
        return None
    try:
        return pysource.parse(text)
    except (SyntaxError, ValueError):
        return None


def _imports(tree: ast.Module) -> dict[str, int]:
    """Top-level module names imported absolutely -> first line."""
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.setdefault(node.module.split(".")[0], node.lineno)
    return found


def _is_test_path(path: str) -> bool:
    segments = path.casefold().split("/")
    name = segments[-1]
    return (
        any(s in ("tests", "test") for s in segments[:-1])
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


_ORM_CALL_RE = re.compile(
    r"\.(query|scalars|scalar_one|scalar_one_or_none|first|one|one_or_none|all|get|execute)\("
)


def _returns_orm(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int | None:
    """Line of a ``return`` that hands back a query result directly (heuristic)."""
    assigned: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assign) and _ORM_CALL_RE.search(ast.unparse(sub.value)):
            assigned.update(t.id for t in sub.targets if isinstance(t, ast.Name))
    for sub in ast.walk(node):
        if isinstance(sub, ast.Return) and sub.value is not None:
            value = sub.value
            if isinstance(value, ast.Name) and value.id in assigned:
                return sub.lineno
            if isinstance(value, ast.Call | ast.Attribute) and _ORM_CALL_RE.search(
                ast.unparse(value)
            ):
                return sub.lineno
    return None


#: import name -> distribution names it commonly comes from (beyond the obvious spelling)
_IMPORT_ALIASES: dict[str, tuple[str, ...]] = {
    "jose": ("python-jose",),
    "jwt": ("pyjwt",),
    "yaml": ("pyyaml",),
    "PIL": ("pillow",),
    "dotenv": ("python-dotenv",),
    "multipart": ("python-multipart",),
    "bs4": ("beautifulsoup4",),
    "sklearn": ("scikit-learn",),
    "cv2": ("opencv-python", "opencv-python-headless"),
    "dateutil": ("python-dateutil",),
    "psycopg2": ("psycopg2-binary",),
    "attr": ("attrs",),
    "Crypto": ("pycryptodome",),
    "magic": ("python-magic",),
    "starlette": ("fastapi",),
    "pydantic": ("fastapi", "pydantic-settings", "sqlmodel"),
    "sqlalchemy": ("sqlmodel",),
    "passlib": ("passlib",),
    "google": ("protobuf",),
}


def _norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).casefold()


@lru_cache(maxsize=1)
def _installed_distributions() -> dict[str, list[str]]:
    try:
        return {k: list(v) for k, v in metadata.packages_distributions().items()}
    except Exception:  # a broken installed distribution must not break the checks
        return {}


_REQ_LINE_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirement_names(path: str, text: str) -> set[str]:
    """Distribution names a requirements file or pyproject.toml declares (normalised)."""
    names: set[str] = set()
    if posixpath.basename(path).casefold() == "pyproject.toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return names
        project = doc.get("project", {})
        specs: list[str] = list(project.get("dependencies", []) or [])
        for extra in (project.get("optional-dependencies", {}) or {}).values():
            specs += list(extra or [])
        for group in (doc.get("dependency-groups", {}) or {}).values():
            specs += [s for s in group or [] if isinstance(s, str)]
        poetry = doc.get("tool", {}).get("poetry", {})
        names.update(_norm_dist(k) for k in (poetry.get("dependencies", {}) or {}))
        for group in (poetry.get("group", {}) or {}).values():
            names.update(_norm_dist(k) for k in (group.get("dependencies", {}) or {}))
        for spec in specs:
            m = _REQ_LINE_RE.match(str(spec))
            if m:
                names.add(_norm_dist(m.group(1)))
        return names
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = _REQ_LINE_RE.match(line)
        if m:
            names.add(_norm_dist(m.group(1)))
    return names


def _is_requirements_file(path: str) -> bool:
    low = path.casefold()
    name = posixpath.basename(low)
    return (
        bool(REQ_NAME_RE.match(name))
        or name == "pyproject.toml"
        or ("/requirements/" in f"/{low}" and extension(name) in (".txt", ".in"))
    )


def route_findings(files: list[ProposedFile]) -> list[Finding]:
    out: list[Finding] = []
    tests = [f for f in files if _is_test_path(f.norm)]
    for f in files:
        if f.tree is None or _is_test_path(f.norm):
            continue
        old_tree = safe_parse(f.old)
        old_routes = {r.key: r for r in _routes(old_tree)} if old_tree is not None else {}
        for route in _routes(f.tree):
            previous = old_routes.get(route.key)
            if previous is None:
                if not _route_tested(route, f.norm, tests):
                    out.append(
                        finding(
                            "endpoint-without-test",
                            f"new route {route.key} ({route.handler}) has no test file in "
                            "the proposal that exercises it",
                            path=f.raw,
                            line=route.line,
                            fix="add a test file (tests/test_*.py) calling this endpoint",
                        )
                    )
            if ast.get_docstring(route.node) is None and (
                previous is None or ast.get_docstring(previous.node) is not None
            ):
                out.append(
                    finding(
                        "route-missing-docstring",
                        f"route handler {route.handler}() has no docstring",
                        path=f.raw,
                        line=route.line,
                        fix="add a docstring saying what the endpoint does",
                    )
                )
            if not route.response_model and route.node.returns is None:
                line = _returns_orm(route.node)
                if line is not None and (previous is None or _returns_orm(previous.node) is None):
                    out.append(
                        finding(
                            "orm-returned-raw",
                            f"{route.handler}() seems to return a query result directly; "
                            "return a Pydantic schema",
                            path=f.raw,
                            line=line,
                            fix="add response_model=YourSchema or convert to a schema",
                        )
                    )
    return out


def _route_tested(route: _Route, module_path: str, tests: list[ProposedFile]) -> bool:
    static = [s for s in route.path.split("/") if s and not s.startswith(("{", "<", ":"))]
    needles = {route.handler}
    if static:
        needles.add("/" + "/".join(static))
        needles.add(static[-1])
    else:
        needles.add(posixpath.splitext(posixpath.basename(module_path))[0])
    return any(any(n in t.text for n in needles) for t in tests)


def requirement_findings(files: list[ProposedFile], base: RepoBase) -> list[Finding]:
    python = [f for f in files if f.tree is not None]
    if not python:
        return []
    all_paths = set(base.files()) | {f.norm for f in files}
    own: set[str] = set()
    for p in all_paths:
        segments = p.split("/")
        own.update(segments[:-1])
        stem, ext = posixpath.splitext(segments[-1])
        if ext in pysource.PYTHON_EXT or ext == "":
            own.add(stem)
    declared: set[str] = set()
    proposed = {f.norm: f.text for f in files}
    for p in all_paths:
        if not _is_requirements_file(p):
            continue
        text = proposed.get(p)
        if text is None:
            text = base.read_text(p)
        if text:
            declared |= _requirement_names(p, text)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    dists = _installed_distributions()
    out: list[Finding] = []
    for f in python:
        assert f.tree is not None
        old_tree = safe_parse(f.old)
        old_imports = set(_imports(old_tree)) if old_tree is not None else set()
        for name, line in sorted(_imports(f.tree).items()):
            if name in old_imports or name in stdlib or name in own:
                continue
            candidates = {_norm_dist(name), _norm_dist("python-" + name), _norm_dist("py" + name)}
            candidates.update(_norm_dist(d) for d in _IMPORT_ALIASES.get(name, ()))
            candidates.update(_norm_dist(d) for d in dists.get(name, ()))
            if candidates & declared:
                continue
            suggestion = (_IMPORT_ALIASES.get(name) or tuple(dists.get(name, ())) or (name,))[0]
            out.append(
                finding(
                    "missing-requirement",
                    f"imports {name!r}, which no requirements.txt (or pyproject.toml) names",
                    path=f.raw,
                    line=line,
                    fix=f"add {suggestion} to requirements.txt in the proposal",
                )
            )
    return out
