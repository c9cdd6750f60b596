"""Git plumbing for publishing: a commit built in a temporary worktree, a push with a scoped token.

Why a temporary worktree: the user's working tree, index, current branch, stash and untracked
files must stay byte-identical while agent-tui commits a proposal, also when they are dirty.
A ``git worktree add --detach`` checkout of the base commit shares the object database, so
the commit is made without touching the user's checkout at all; the branch ref is created
afterwards with a compare-and-swap ``update-ref``.

Why the token travels in environment variables: ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/
``GIT_CONFIG_VALUE_n`` give one ``git push`` process an ``http.<url>.extraHeader`` that no
file, remote URL, command line (``ps``) or log ever sees.

Every git call runs with the user's own identity and config, but with hooks disabled
(``core.hooksPath`` pointed at an empty path): a ``post-checkout`` or ``pre-commit`` hook
must not run on model-written code or touch the user's checkout behind our back.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from engine.core.errors import UnsafePathError
from engine.core.gitcmd import GitError, git_env, redact, run_git, state_dir
from engine.core.redact import secret_env_names
from engine.core.textsafe import has_controls

log = logging.getLogger(__name__)

#: variables holding secrets that a test command (model-written code) must never see
SECRET_ENV_VARS = ("GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN")
ZERO_SHA = "0" * 40


@functools.cache
def _path_re() -> re.Pattern[str]:
    # engine.core.models imports pydantic (~0.1 s of a ~0.35 s start): check_path compiles
    # the pattern on first use, so importing this module does not pay for it
    # (docs/benchmarks.md, "Process start")
    from engine.core.models import PATH_PATTERN

    return re.compile(PATH_PATTERN)


def _basic(token: str) -> str:
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def auth_env(url: str, token: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables that give one git process an auth header for ``url``'s host.

    The header is scoped to ``scheme://host/`` (``http.<url>.extraHeader``), so it is only
    sent there, and it lives only in this process's environment.

    Args:
        url: the remote URL git will talk to (ssh and local paths get nothing).
        token: the GitHub token (None: nothing to add).
        base: the environment to extend (default: ``os.environ``).

    Returns:
        The variables to add to a git subprocess's environment.
    """
    if not token:
        return {}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return {}
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    source = base if base is not None else os.environ
    try:
        count = int(source.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    return {
        "GIT_CONFIG_COUNT": str(count + 1),
        f"GIT_CONFIG_KEY_{count}": f"http.{parts.scheme}://{host}/.extraHeader",
        f"GIT_CONFIG_VALUE_{count}": f"Authorization: Basic {_basic(token)}",
    }


def fetch_url(repo_dir: Path, remote: str) -> str | None:
    """The URL git fetches from for ``remote``, after ``insteadOf`` rewriting."""
    proc = run_git(repo_dir, "remote", "get-url", remote, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def push_url(repo_dir: Path, remote: str) -> str | None:
    """The URL git pushes to for ``remote``, after ``pushurl`` and ``insteadOf`` rewriting."""
    proc = run_git(repo_dir, "remote", "get-url", "--push", remote, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def rev_parse(repo_dir: Path, ref: str) -> str | None:
    """The commit ``ref`` names, or None."""
    proc = run_git(repo_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def branch_sha(repo_dir: Path, branch: str) -> str | None:
    """The tip of local branch ``branch``, or None."""
    return rev_parse(repo_dir, f"refs/heads/{branch}")


def remote_branch_sha(repo_dir: Path, remote: str, branch: str) -> str | None:
    """The remote-tracking tip ``refs/remotes/<remote>/<branch>``, or None."""
    return rev_parse(repo_dir, f"refs/remotes/{remote}/{branch}")


def remote_head_branch(repo_dir: Path, remote: str) -> str | None:
    """The remote's default branch as last seen (``refs/remotes/<remote>/HEAD``), or None."""
    proc = run_git(repo_dir, "symbolic-ref", "--quiet", f"refs/remotes/{remote}/HEAD", check=False)
    ref = proc.stdout.strip()
    prefix = f"refs/remotes/{remote}/"
    return ref[len(prefix) :] if proc.returncode == 0 and ref.startswith(prefix) else None


def current_branch(repo_dir: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD."""
    proc = run_git(repo_dir, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def valid_branch_name(name: str) -> bool:
    """Whether git accepts ``name`` as a branch name."""
    if name.startswith("-"):
        return False
    # no repository needed: run where a directory surely exists
    proc = run_git(Path(tempfile.gettempdir()), "check-ref-format", "--branch", name, check=False)
    return proc.returncode == 0


def create_branch(repo_dir: Path, branch: str, sha: str, *, old: str | None = None) -> None:
    """Point ``refs/heads/<branch>`` at ``sha`` atomically.

    Args:
        repo_dir: the repository.
        branch: the branch name.
        sha: the commit.
        old: the tip the branch must still have (None: the branch must not exist yet).

    Raises:
        GitError: the branch moved (or appeared) in the meantime.
    """
    if has_controls(branch, allow_newlines=False) or branch.startswith("-"):
        raise GitError(f"refusing the branch name {ascii(branch)}: control characters or '-'")
    ref = f"refs/heads/{branch}"
    run_git(repo_dir, "update-ref", "-m", "agent-tui: publish", ref, sha, old or ZERO_SHA)


# ----------------------------------------------------------------------------------------------
# proposal files


def check_path(path: str) -> None:
    """Refuse a proposal path that is not a plain, relative path inside the repository.

    Raises:
        UnsafePathError: naming the path and why.
    """
    parts = path.split("/")
    if not _path_re().match(path):
        raise UnsafePathError(f"{path!r} is not a plain relative path")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"{path!r} contains an empty, '.' or '..' component")
    if parts[0].lower() == ".git" or any(p.lower() == ".git" for p in parts):
        raise UnsafePathError(f"{path!r} is inside the git directory")


def target_path(root: Path, path: str) -> Path:
    """Where ``path`` lands under ``root``, after every safety check.

    The checks' own ``engine.review.checks.paths.safe_target`` decides (it follows symlinks
    that stay in the repository and returns the real file); the local rules (a plain relative
    path, no ``..``, nothing in ``.git``, the result inside ``root``) always apply as well.

    Raises:
        UnsafePathError: the path would leave ``root`` or touch something it must not.
    """
    check_path(path)
    root_resolved = root.resolve()
    # lazy: the checks are heavy to import (TUI start)
    from engine.review.checks.paths import safe_target

    target = safe_target(root_resolved, path).resolve()
    if not target.is_relative_to(root_resolved) or target == root_resolved:
        raise UnsafePathError(f"{path!r} resolves to {target}, outside the repository's files")
    if ".git" in target.relative_to(root_resolved).parts:
        raise UnsafePathError(f"{path!r} resolves into the git directory")
    return target


# ----------------------------------------------------------------------------------------------
# the temporary worktree


@dataclass
class TestRun:
    """The result of the repository's test command in the temporary worktree."""

    __test__ = False  # not a pytest class

    command: str
    returncode: int | None
    """None: killed at the timeout."""
    output: str
    """The last part of stdout+stderr."""
    seconds: float

    @property
    def passed(self) -> bool:
        """The command exited with status 0 before the timeout."""
        return self.returncode == 0

    def summary(self) -> str:
        """One line for a plan, a progress message or a log."""
        if self.returncode is None:
            waited = f"{self.seconds:.1f}" if self.seconds < 10 else f"{self.seconds:.0f}"
            return f"`{self.command}` timed out after {waited} s"  # 0.5 s, not "0 s"
        verdict = "passed" if self.passed else f"failed (exit {self.returncode})"
        return f"`{self.command}` {verdict} in {self.seconds:.1f} s"


def worktrees_dir(repo_dir: Path) -> Path:
    """Where agent-tui's temporary worktrees live (inside the git dir: never in the user's tree)."""
    path = state_dir(repo_dir) / "worktrees"
    path.mkdir(parents=True, exist_ok=True)
    return path


def add_worktree(repo_dir: Path, path: Path, commit: str) -> None:
    """Check out ``commit`` (detached) into a new worktree at ``path``."""
    remove_worktree(repo_dir, path)
    run_git(repo_dir, "worktree", "add", "--detach", "--quiet", str(path), commit)


def remove_worktree(repo_dir: Path, path: Path) -> None:
    """Remove a temporary worktree and its registration, whatever state it was left in."""
    if path.exists():
        run_git(repo_dir, "worktree", "remove", "--force", "--force", str(path), check=False)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    run_git(repo_dir, "worktree", "prune", check=False)


def cleanup_worktrees(repo_dir: Path) -> int:
    """Remove worktrees left behind by a process that was killed; returns how many."""
    base = worktrees_dir(repo_dir)
    stale = [p for p in base.iterdir() if p.is_dir()]
    for path in stale:
        remove_worktree(repo_dir, path)
    run_git(repo_dir, "worktree", "prune", check=False)
    return len(stale)


def write_files(root: Path, files: Sequence[tuple[str, str]]) -> list[str]:
    """Write each ``(path, content)`` under ``root`` exactly (UTF-8, no newline translation).

    Returns:
        The repository-relative paths written (a path through an in-repository symlink is
        reported as the real file's path, which is what must be staged).

    Raises:
        UnsafePathError: a path fails the safety checks (nothing after it is written).
    """
    written = []
    root_resolved = root.resolve()
    for path, content in files:
        target = target_path(root, path)
        if target.is_dir():
            raise UnsafePathError(f"{path!r} is a directory in the repository")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as fh:
            fh.write(content)
        written.append(target.relative_to(root_resolved).as_posix())
    return written


def commit_all(worktree: Path, paths: Sequence[str], message: str) -> str | None:
    """Stage ``paths`` and commit them with ``message``; the author comes from git config.

    Returns:
        The new commit, or None when the files equal the base (nothing to commit).

    Raises:
        GitError: git refused (e.g. no user.name/user.email configured).
    """
    if has_controls(message):
        raise GitError(
            "the commit message holds control, escape or bidi characters; refusing to commit",
            hint="remove them (agent-tui check flags them as message-control-char)",
        )
    run_git(worktree, "add", "--", *paths)
    if run_git(worktree, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return None
    proc = run_git(
        worktree, "commit", "--quiet", "--no-verify", "-F", "-", input_text=message, check=False
    )
    if proc.returncode != 0:
        err = proc.stderr.strip()
        hint = ""
        if "user.email" in err or "user.name" in err or "identity" in err:
            hint = "set your identity: git config --global user.name ... / user.email ..."
        raise GitError(f"git commit failed: {err}", hint=hint, stderr=err)
    sha = rev_parse(worktree, "HEAD")
    assert sha is not None
    return sha


def run_test_command(
    worktree: Path, command: str, timeout: float, *, drop: Sequence[str] = ()
) -> TestRun:
    """Run the repository's test command in the worktree, killed (whole group) at ``timeout``.

    The command runs model-written code, so credentials are removed from its environment:
    the GitHub token variables, the ``drop`` names (every configured ``api_key_env``) and any
    variable whose name says it holds a secret (``*_TOKEN``, ``*_API_KEY``, ``*PASSWORD*``...).
    """
    hidden = {*SECRET_ENV_VARS, *drop, *secret_env_names()}
    env = {k: v for k, v in git_env().items() if k not in hidden}
    env.pop("LC_ALL", None)
    if "LC_ALL" in os.environ:
        env["LC_ALL"] = os.environ["LC_ALL"]
    start = time.monotonic()
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=worktree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        code = None
    text = out.decode("utf-8", "replace") if out else ""
    return TestRun(command, code, text[-4000:], time.monotonic() - start)


# ----------------------------------------------------------------------------------------------
# network


_NETWORK_PATTERNS = (
    "could not resolve host",
    "failed to connect",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "network is unreachable",
    "could not read from remote repository",
    "unable to access",
    "connection reset",
    "the remote end hung up",
    "early eof",
    "ssl",
    "503",
    "502",
    "504",
)
_AUTH_PATTERNS = ("authentication failed", "permission denied", "denied to")
#: an HTTP 401/403 as git reports it ("The requested URL returned error: 403", "HTTP 403",
#: "403 Forbidden"): only in those words, so a port (40305) or a path (``/tmp/run-403/``)
#: is not taken for a refusal
_HTTP_REFUSAL_RE = re.compile(
    r"(?:returned error|http(?:/[\d.]+)?|status(?: code)?)\s*:?\s*40[13](?!\d)"
    r"|(?<![\w/.-])40[13] (?:forbidden|unauthorized)"
)


@dataclass
class PushOutcome:
    """What ``git push`` did."""

    ok: bool
    network: bool
    """The failure looks like the network (retry later), not a refusal."""
    message: str


def classify_push_error(stderr: str) -> bool:
    """Whether a push failure is worth retrying later (network), not a refusal to act on."""
    low = stderr.lower()
    if "[rejected]" in low or "[remote rejected]" in low or "non-fast-forward" in low:
        return False
    if any(p in low for p in _AUTH_PATTERNS) or _HTTP_REFUSAL_RE.search(low):
        return False
    return any(p in low for p in _NETWORK_PATTERNS) or not low


def push(
    repo_dir: Path,
    remote: str,
    sha: str,
    branch: str,
    *,
    token: str | None,
    force_with_lease: str | None = None,
    timeout: float = 300,
) -> PushOutcome:
    """Push ``sha`` to ``refs/heads/<branch>`` on ``remote``; the token only in this process.

    Args:
        repo_dir: the repository.
        remote: a remote name.
        sha: the commit to push.
        branch: the remote branch.
        token: GitHub token for an https remote (None: git's own credentials).
        force_with_lease: accept replacing the remote branch only if it is at this commit.
        timeout: seconds before the push is abandoned (a network failure).

    Returns:
        The outcome; a failure never raises, it says whether it looks like the network.
    """
    url = push_url(repo_dir, remote) or ""
    env = auth_env(url, token)
    args = ["push", "--porcelain", "--no-verify"]
    if force_with_lease:
        args.append(f"--force-with-lease=refs/heads/{branch}:{force_with_lease}")
    args += [remote, f"{sha}:refs/heads/{branch}"]
    try:
        proc = run_git(repo_dir, *args, env=env, check=False, timeout=timeout, secrets=[token])
    except GitError as exc:
        return PushOutcome(False, True, exc.message)
    out = redact((proc.stderr + "\n" + proc.stdout).strip(), [token])
    if proc.returncode == 0:
        return PushOutcome(True, False, out)
    return PushOutcome(False, classify_push_error(out), out)


def fetch_branch(repo_dir: Path, remote: str, branch: str, *, token: str | None) -> str | None:
    """Fetch ``branch`` from ``remote`` into its remote-tracking ref.

    Returns:
        None on success, else git's (redacted) message.
    """
    url = fetch_url(repo_dir, remote) or ""
    env = auth_env(url, token)
    refspec = f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}"
    try:
        proc = run_git(
            repo_dir,
            *("fetch", "--quiet", "--no-tags", remote, refspec),
            env=env,
            check=False,
            timeout=120,
            secrets=[token],
        )
    except GitError as exc:
        return exc.message
    if proc.returncode != 0:
        return redact(proc.stderr.strip(), [token]) or "git fetch failed"
    return None


def is_ancestor(repo_dir: Path, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant``."""
    proc = run_git(repo_dir, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    return proc.returncode == 0
