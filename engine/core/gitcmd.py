"""Running git: one subprocess wrapper with the same safety flags everywhere, and the
repository facts every stage reads (its top directory, its state folder, a remote's URL, the
parsed ``git status``).

Why in the core: issue sources (a remote's URL, the issue cache's folder), the context
builder (``git status``), the checks and the publisher all read the same repository, and
none of those stages may import another's git code.

Every git call runs with the user's own identity and config, but with hooks disabled
(``core.hooksPath`` pointed at an empty path) and without environment overrides that would
point git at another repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import platformdirs

from engine.core.errors import RepoError
from engine.core.redact import redact as redact_text

#: environment variables that would point git somewhere else than the repository we name
_GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_PREFIX",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


class GitError(RepoError):
    """A git command failed; ``message`` carries git's own (redacted) words."""

    title = "Git error"

    def __init__(self, message: str, *, hint: str = "", stderr: str = "") -> None:
        super().__init__(message, hint=hint)
        self.stderr = stderr


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with every secret (and its Basic-auth encoding) replaced by ``***``.

    Args:
        text: what may be shown or logged.
        secrets: the values that must never appear (``None`` entries are skipped).

    Returns:
        The redacted text.
    """
    return redact_text(text, secrets)


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git subprocess: no location overrides, no prompts, C messages."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    env.setdefault("GIT_ASKPASS", "")
    env["SSH_ASKPASS"] = ""
    env["GCM_INTERACTIVE"] = "never"
    if extra:
        env.update(extra)
    return env


def run_git(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = 120,
    input_text: str | None = None,
    secrets: Sequence[str | None] = (),
    no_hooks: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one git command in ``cwd``.

    Args:
        cwd: the working directory (a repository or worktree).
        *args: git's arguments.
        env: extra environment variables (on top of :func:`git_env`).
        check: raise :class:`GitError` on a non-zero exit.
        timeout: seconds before the command is killed.
        input_text: text fed to stdin.
        secrets: values redacted from any error message.
        no_hooks: disable every hook for this command.

    Returns:
        The completed process (stdout/stderr as text).

    Raises:
        GitError: git failed (``check``), timed out, or is not installed.
    """
    cmd = ["git"]
    if no_hooks:
        cmd += ["-c", f"core.hooksPath={os.devnull}"]
    cmd += ["-c", "gc.auto=0", *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=git_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise GitError("git is not installed", hint="install git and try again") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"`git {args[0]}` did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        stderr = redact(proc.stderr.strip(), secrets)
        raise GitError(f"`git {' '.join(args[:2])}` failed: {stderr}", stderr=stderr)
    return proc


def toplevel(repo_dir: Path) -> Path:
    """The top of the working tree containing ``repo_dir``.

    Raises:
        RepoError: ``repo_dir`` is not inside a git working tree.
    """
    proc = run_git(repo_dir, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise RepoError(
            f"{repo_dir} is not inside a git repository",
            hint="run agent-tui inside a repository (or pass --repo DIR)",
        )
    return Path(proc.stdout.strip())


def git_common_dir(repo_dir: Path) -> Path | None:
    """The repository's common git directory (shared by its worktrees); None outside git."""
    if not repo_dir.exists():
        return None
    proc = run_git(repo_dir, "rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
    if proc.returncode != 0:
        return None
    return Path(proc.stdout.strip())


def state_dir(repo_dir: Path) -> Path:
    """Where agent-tui keeps its state for a repository, created on demand.

    ``<git common dir>/agent-tui`` (never committed, shared by worktrees, gone with the clone);
    outside git, a per-directory folder of the user's data dir.
    """
    common = git_common_dir(repo_dir)
    if common is not None:
        path = common / "agent-tui"
    else:
        key = hashlib.sha256(str(repo_dir.resolve()).encode()).hexdigest()[:16]
        path = Path(platformdirs.user_data_dir("agent-tui")) / "repos" / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_get(repo_dir: Path, key: str) -> str | None:
    """One git config value as written (no ``insteadOf`` rewriting); None when unset."""
    proc = run_git(repo_dir, "config", "--get", key, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def remote_url(repo_dir: Path, remote: str) -> str | None:
    """The URL configured for ``remote`` (None when there is no such remote)."""
    return config_get(repo_dir, f"remote.{remote}.url")


def status_entries(status: bytes) -> list[tuple[str, str]]:
    """(XY code, path) of every ``git status --porcelain=v1 -z`` entry (renames: the new
    path); paths are relative to the top of the work tree, as git prints them."""
    entries = []
    fields = status.split(b"\0")
    i = 0
    while i < len(fields):
        item = fields[i]
        i += 1
        if len(item) < 4:
            continue
        code = item[:2].decode("ascii", "replace")
        path = item[3:].decode("utf-8", "surrogateescape")
        entries.append((code, path))
        if code[0] in "RC":
            i += 1  # the original path follows a rename or copy
    return entries
