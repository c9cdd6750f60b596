"""Sensitive paths: files whose change runs code on someone's machine, or steers agent-tui.

Why warnings and not errors: a change to CI, git hooks, a Dockerfile, a build hook, a
Makefile, a shell script, an editor's task file, the test configuration or a dependency file
may be exactly what the issue asks for, but it executes when someone builds, tests, opens or
installs the project. The user acknowledges each after reading it. The rules look at the
path (and, for ``pyproject.toml``, at which sections change), never run anything.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from engine.review.checks.registry import Finding, extension, finding

_CI_NAMES = {
    ".gitlab-ci.yml", ".travis.yml", "jenkinsfile", "azure-pipelines.yml", ".drone.yml",
    "bitbucket-pipelines.yml", "appveyor.yml", ".appveyor.yml", "cloudbuild.yaml",
}  # fmt: skip


_CI_DIRS = {".github", ".circleci", ".gitlab", ".buildkite", ".woodpecker", ".azure-pipelines"}


_HOOK_DIRS = {".githooks", ".husky", ".hooks", "githooks"}


_HOOK_NAMES = {
    ".pre-commit-config.yaml", ".pre-commit-hooks.yaml", "lefthook.yml", "lefthook.yaml",
    ".lefthook.yml", ".lefthook.yaml", ".gitmodules",
}  # fmt: skip


_DOCKER_NAMES = {
    "dockerfile", "containerfile", "docker-compose.yml", "docker-compose.yaml", "compose.yml",
    "compose.yaml",
}  # fmt: skip


_BUILD_NAMES = {"setup.py", "setup.cfg", "tox.ini", "noxfile.py", "build.py", "hatch_build.py"}


_DEV_ENV_NAMES = {".envrc", ".env.local", ".direnv"}


_DEV_ENV = {
    ".vscode/tasks.json", ".vscode/launch.json", ".vscode/settings.json",
    ".vscode/extensions.json", ".devcontainer/devcontainer.json", ".idea/workspace.xml",
}  # fmt: skip


_TEST_CONFIG_NAMES = {"conftest.py", "pytest.ini", "sitecustomize.py", "usercustomize.py"}


_MAKE_NAMES = {"makefile", "gnumakefile", "justfile", ".justfile", "taskfile.yml", "taskfile.yaml"}


_SHELL_EXT = {".sh", ".bash", ".zsh", ".ksh", ".fish", ".ps1", ".psm1", ".bat", ".cmd"}


_SHEBANG_SHELL_RE = re.compile(r"\A#!.*\b(ba|z|k|da|fi|c|tc)?sh\b")


_DEP_NAMES = {
    "pipfile", "pipfile.lock", "poetry.lock", "uv.lock", "pdm.lock", "package.json",
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "go.mod",
    "go.sum", "cargo.toml", "cargo.lock", "gemfile", "gemfile.lock", "composer.json",
    "composer.lock", "environment.yml", "environment.yaml", "conda.yml", "conda.yaml",
}  # fmt: skip


REQ_NAME_RE = re.compile(r"^(requirements|constraints)([-_.\w]*)\.(txt|in)$")


def _pyproject_changed_sections(old: str | None, new: str) -> tuple[list[str], list[str]]:
    """(build keys, dependency keys) whose values differ between two pyproject texts."""
    try:
        new_doc = tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        return [], []  # reported as data-syntax-error
    try:
        old_doc = tomllib.loads(old) if old else {}
    except tomllib.TOMLDecodeError:
        old_doc = {}
    build: list[str] = []
    deps: list[str] = []

    def visit(prefix: str, a: Any, b: Any) -> None:
        keys = set(a if isinstance(a, dict) else {}) | set(b if isinstance(b, dict) else {})
        for key in sorted(keys):
            av = a.get(key) if isinstance(a, dict) else None
            bv = b.get(key) if isinstance(b, dict) else None
            if av == bv:
                continue
            dotted = f"{prefix}{key}"
            low = dotted.casefold()
            is_build = (
                low.startswith("build-system")
                or low in ("project.scripts", "project.gui-scripts", "project.entry-points")
                or (
                    low.startswith("tool.")
                    and ("build" in low or low.startswith("tool.setuptools"))
                )
            )
            is_deps = "depend" in low or low.startswith("dependency-groups")
            if is_build:
                build.append(dotted)
            elif is_deps:
                deps.append(dotted)
            elif isinstance(av, dict) or isinstance(bv, dict):
                visit(dotted + ".", av, bv)

    visit("", old_doc, new_doc)
    return build, deps


_RUNS = "a change there runs code on someone's machine; review it line by line"


def sensitive_findings(norm: str, text: str, old: str | None, path: str) -> list[Finding]:
    """Every sensitive-path rule on one proposed file.

    Args:
        norm: the normalised path (matched case-insensitively).
        text: the proposed content (a shebang makes a shell script).
        old: the base version, for which ``pyproject.toml`` sections change.
        path: the path as the proposal gives it (the findings name it).
    """
    low = norm.casefold()
    segments = low.split("/")
    name = segments[-1]
    out = _build_findings(segments, name, path)
    if name == "pyproject.toml":
        out += _pyproject_findings(old, text, path)
    out += _script_findings(name, text, path)
    out += _config_findings(low, segments, name, path)
    out += _dependency_findings(segments, name, path)
    return out


def _build_findings(segments: list[str], name: str, path: str) -> list[Finding]:
    """CI, git hooks, container builds and build hooks."""
    out: list[Finding] = []
    if segments[0] in _CI_DIRS or name in _CI_NAMES:
        out.append(
            finding(
                "sensitive-ci",
                f"CI configuration: {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file from the proposal",
            )
        )
    if segments[0] in _HOOK_DIRS or name in _HOOK_NAMES:
        out.append(
            finding(
                "sensitive-git-hooks",
                f"git hooks / pre-commit config: {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    if (
        name in _DOCKER_NAMES
        or name.startswith(("dockerfile.", "docker-compose."))
        or name.endswith(".dockerfile")
    ):
        out.append(
            finding(
                "sensitive-docker",
                f"container build / compose file: {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    if name in _BUILD_NAMES:
        out.append(
            finding(
                "sensitive-build",
                f"build hook: {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    return out


def _pyproject_findings(old: str | None, text: str, path: str) -> list[Finding]:
    """``pyproject.toml``: only a change to its build or dependency sections is sensitive."""
    out: list[Finding] = []
    build, deps = _pyproject_changed_sections(old, text)
    if build:
        out.append(
            finding(
                "sensitive-build",
                f"pyproject.toml build sections change ({', '.join(build[:4])}): {_RUNS}",
                path=path,
                fix="acknowledge after review, or keep the build sections",
            )
        )
    if deps:
        out.append(
            finding(
                "sensitive-dependencies",
                f"pyproject.toml dependencies change ({', '.join(deps[:4])}): "
                "new packages run code when installed",
                path=path,
                fix="check each new package name and version, then acknowledge",
            )
        )
    return out


def _script_findings(name: str, text: str, path: str) -> list[Finding]:
    """Makefiles and task runners, shell scripts (by extension or shebang)."""
    out: list[Finding] = []
    if name in _MAKE_NAMES or name.endswith(".mk"):
        out.append(
            finding(
                "sensitive-makefile",
                f"Makefile / task runner: {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    if extension(name) in _SHELL_EXT or _SHEBANG_SHELL_RE.match(text):
        out.append(
            finding(
                "sensitive-shell",
                f"shell script: {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    return out


def _config_findings(low: str, segments: list[str], name: str, path: str) -> list[Finding]:
    """Git attributes, editor and shell environments, agent-tui's own config, test config."""
    out: list[Finding] = []
    if name == ".gitattributes":
        out.append(
            finding(
                "sensitive-gitattributes",
                "git attributes: a filter/diff driver runs a command, linguist-generated or "
                "-diff hide a file's diff from review",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    if name in _DEV_ENV_NAMES or (len(segments) > 1 and f"{segments[-2]}/{name}" in _DEV_ENV):
        out.append(
            finding(
                "sensitive-dev-env",
                f"an editor or shell runs this file when the project is opened: {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    if name == ".agent-tui.toml" or low.startswith(".agent-tui/prompts/"):
        out.append(
            finding(
                "sensitive-agent-config",
                "agent-tui's own configuration or prompts: a change steers the next "
                "generation (a changed .agent-tui.toml needs `agent-tui trust` again)",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    if name in _TEST_CONFIG_NAMES:
        out.append(
            finding(
                "sensitive-test-config",
                f"runs whenever the tests run (also [publish] test_command): {_RUNS}",
                path=path,
                fix="acknowledge after review, or drop the file",
            )
        )
    return out


def _dependency_findings(segments: list[str], name: str, path: str) -> list[Finding]:
    """Lock files, manifests and requirements files."""
    if (
        name in _DEP_NAMES
        or REQ_NAME_RE.match(name)
        or (
            len(segments) > 1
            and segments[-2] == "requirements"
            and extension(name) in (".txt", ".in")
        )
    ):
        return [
            finding(
                "sensitive-dependencies",
                "dependency file: new packages run code when installed",
                path=path,
                fix="check each new package name and version, then acknowledge",
            )
        ]
    return []
