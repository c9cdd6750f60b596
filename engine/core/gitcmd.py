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
from typing import Any

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


_REPO_HINT = "run agent-tui inside a git repository, or pass --repo DIR"


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


def _argv(args: Sequence[str], no_hooks: bool) -> list[str]:
    """git's command line with the safety flags every call carries.

    ``--no-optional-locks``: a read (``status``) never takes the index lock, so agent-tui
    never fights the user's own git for it; ``core.hooksPath`` at an empty path: no
    repository hook runs; ``gc.auto=0``: no surprise garbage collection mid-command.
    """
    cmd = ["git", "--no-optional-locks"]
    if no_hooks:
        cmd += ["-c", f"core.hooksPath={os.devnull}"]
    return [*cmd, "-c", "gc.auto=0", *args]


def _run(
    cwd: Path,
    args: Sequence[str],
    *,
    text: bool,
    env: Mapping[str, str] | None,
    timeout: float | None,
    stdin: str | bytes | None,
    no_hooks: bool,
) -> subprocess.CompletedProcess[Any]:
    """One git process; a missing git, a missing directory or a timeout is a :class:`GitError`."""
    try:
        return subprocess.run(
            _argv(args, no_hooks),
            cwd=cwd,
            env=git_env(env),
            capture_output=True,
            text=text,
            timeout=timeout,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        if not os.path.isdir(cwd):
            raise GitError(f"{cwd} is not a directory", hint=_REPO_HINT) from None
        raise GitError("git is not installed", hint="install git and try again") from None
    except NotADirectoryError:
        raise GitError(f"{cwd} is not a directory", hint=_REPO_HINT) from None
    except subprocess.TimeoutExpired:
        raise GitError(f"`git {args[0]}` did not finish within {timeout:.0f} s") from None


def _check(
    proc: subprocess.CompletedProcess[Any], args: Sequence[str], secrets: Sequence[str | None]
) -> None:
    if proc.returncode != 0:
        err = (
            proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode("utf-8", "replace")
        )
        stderr = redact(err.strip(), secrets)
        raise GitError(f"`git {' '.join(args[:2])}` failed: {stderr}", stderr=stderr)


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
    """Run one git command in ``cwd``; its output as text.

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
        GitError: git failed (``check``), timed out, is not installed, or ``cwd`` is not a
            directory.
    """
    proc = _run(cwd, args, text=True, env=env, timeout=timeout, stdin=input_text, no_hooks=no_hooks)
    if check:
        _check(proc, args, secrets)
    return proc


def run_git_bytes(
    cwd: Path,
    *args: str,
    check: bool = True,
    timeout: float | None = None,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command in ``cwd``; its output as bytes (paths with ``-z``, blobs).

    Lists are read with ``-z`` and decoded by the caller with ``surrogateescape``, so a path
    in any encoding round-trips. Same flags and errors as :func:`run_git`. No timeout by
    default: these are local reads (the context's status and file list, the checks' trees
    and blobs), and Python waits for a process with a timeout by polling, which cost ~0.8 ms
    a call in ``bench/git_runner.py`` (2.6 ms instead of 1.8).
    """
    proc = _run(cwd, args, text=False, env=None, timeout=timeout, stdin=input_bytes, no_hooks=True)
    if check:
        _check(proc, args, ())
    return proc


def toplevel(repo_dir: Path) -> Path:
    """The top of the working tree containing ``repo_dir`` (symbolic links resolved).

    Raises:
        RepoError: ``repo_dir`` is not inside a git working tree (a :class:`GitError` when
            it is not a directory or git is not installed).
    """
    proc = run_git(repo_dir, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise RepoError(f"{repo_dir} is not inside a git repository", hint=_REPO_HINT)
    return Path(proc.stdout.strip()).resolve()


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
