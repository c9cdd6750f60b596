"""What a proposal changes: per file added / modified / unchanged, with a unified diff.

Why: the user reviews a proposal as a diff against the branch it will be published on, not
as whole files; the TUI's preview, the ``agent-tui check`` command and the checks (lines
dropped, definitions removed) all need the same base content and the same counts.

The base is a git tree (``HEAD`` by default, or any ref), read with ``git ls-tree`` and
``git cat-file`` so uncommitted edits in the working tree do not leak into the comparison.
A directory that is not a git repository (or has no commit yet) falls back to its working
tree files. The base never reads outside the repository: lookups are by normalised
repository-relative path, and a path that is not one simply has no base.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from engine.core.errors import RepoError
from engine.core.gitcmd import GitError, run_git_bytes, status_entries
from engine.core.textsafe import safe

#: mode git gives a symbolic link in a tree
_SYMLINK_MODE = "120000"


class FileStatus(str, Enum):
    """What writing a proposal file does to the base."""

    ADDED = "added"
    MODIFIED = "modified"
    UNCHANGED = "unchanged"


def split_lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping the ends (``str.splitlines`` also splits on ``\\f``...).

    Git counts lines by ``\\n``; so do the diff and every line number the checks report.
    """
    if not text:
        return []
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def lexical_repo_path(path: object) -> str | None:
    """``path`` as a normalised repository-relative POSIX path, or None if it is not one.

    Only a lexical test (no filesystem access): used to look a path up in the base. The
    safety checks (``engine.review.checks``) say *why* a path is refused.
    """
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        return None
    if path.startswith("/") or (len(path) >= 2 and path[1] == ":"):
        return None
    norm = posixpath.normpath(path)
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return norm


class RepoBase:
    """Read-only view of the content a proposal is compared with.

    Attributes:
        repo_dir: the repository's top directory (resolved).
        ref: the git ref the base is read from, or None for the working tree.
    """

    def __init__(self, repo_dir: Path, ref: str | None = "HEAD") -> None:
        """Open the base of ``repo_dir`` at ``ref``.

        Args:
            repo_dir: the repository directory.
            ref: a git ref (``HEAD``, a branch, a commit). None reads the working tree.
                ``HEAD`` of a directory that is not a git repository, or of a repository
                without commits, falls back to the working tree.

        Raises:
            RepoError: ``repo_dir`` is not a directory, or ``ref`` (other than HEAD) does
                not name a commit.
        """
        self.repo_dir = Path(repo_dir).resolve()
        if not self.repo_dir.is_dir():
            raise RepoError(
                f"{repo_dir} is not a directory",
                hint="pass the repository's directory with --repo",
            )
        self._entries: dict[str, tuple[str, str]] | None = None  # path -> (mode, sha)
        self._dirs: set[str] = set()
        self._cache: dict[str, bytes | None] = {}
        self._blobs: dict[str, bytes | None] = {}
        self._prefix = ""
        """``repo_dir`` relative to the top of its work tree, with a trailing ``/`` (or "")."""
        self.ref: str | None = None
        if ref is not None:
            entries = self._ls_tree(ref)
            if entries is not None:
                self.ref = ref
                self._entries = entries
                for p in entries:
                    parts = p.split("/")
                    for i in range(1, len(parts)):
                        self._dirs.add("/".join(parts[:i]))

    # -- git plumbing ------------------------------------------------------------------

    def _git(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return run_git_bytes(self.repo_dir, *args, check=False, input_bytes=stdin)

    def _ls_tree(self, ref: str) -> dict[str, tuple[str, str]] | None:
        try:
            top = self._git("rev-parse", "--show-toplevel")
        except GitError as exc:  # git missing
            if ref == "HEAD":
                return None
            raise RepoError(f"git is not available: {exc}", hint="install git") from exc
        if top.returncode != 0:
            if ref == "HEAD":
                return None
            raise RepoError(
                f"{self.repo_dir} is not a git repository, so there is no ref {ref!r}",
                hint="run the check inside a git repository or leave out the base ref",
            )
        toplevel = Path(os.fsdecode(top.stdout.strip())).resolve()
        if toplevel != self.repo_dir:
            # a subdirectory of a repository: paths are relative to repo_dir, so read the
            # tree under it (git's "HEAD:sub/dir" syntax) with the same relative paths.
            rel = self.repo_dir.relative_to(toplevel).as_posix()
            self._prefix = rel + "/"
            treeish = f"{ref}:{rel}"
        else:
            treeish = f"{ref}^{{tree}}"
        verify = self._git("rev-parse", "--verify", "--quiet", treeish)
        if verify.returncode != 0:
            if ref == "HEAD":
                return None  # no commit yet: compare with the working tree
            raise RepoError(
                f"{ref!r} does not name a commit in {self.repo_dir}",
                hint="give a branch, tag or commit that exists (git rev-parse REF)",
            )
        out = self._git("ls-tree", "-r", "-z", "--full-tree", verify.stdout.strip().decode())
        if out.returncode != 0:
            raise RepoError(
                f"git ls-tree failed: {out.stderr.decode(errors='replace').strip()}",
                hint="check the repository with `git status`",
            )
        entries: dict[str, tuple[str, str]] = {}
        for record in out.stdout.split(b"\x00"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, kind, sha = meta.decode().split()
            if kind in ("blob", "commit"):
                entries[os.fsdecode(raw_path)] = (mode, sha)
        return entries

    # -- queries -----------------------------------------------------------------------

    @property
    def is_git(self) -> bool:
        """True when the base is a git tree, False when it is the working tree."""
        return self._entries is not None

    def describe(self) -> str:
        """Where the base comes from, for headers and messages."""
        return self.ref if self.ref is not None else "working tree"

    def files(self) -> list[str]:
        """Every file path of the base (git: the tree; working tree: files outside .git)."""
        if self._entries is not None:
            return sorted(self._entries)
        found: list[str] = []
        for top, dirs, names in os.walk(self.repo_dir):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            rel_top = Path(top).relative_to(self.repo_dir).as_posix()
            for name in names:
                found.append(name if rel_top == "." else f"{rel_top}/{name}")
        return sorted(found)

    def symlink_target(self, path: str) -> str | None:
        """The target of ``path`` when the base records it as a symbolic link."""
        norm = lexical_repo_path(path)
        if norm is None:
            return None
        if self._entries is not None:
            entry = self._entries.get(norm)
            if entry is None or entry[0] != _SYMLINK_MODE:
                return None
            data = self._blob(entry[1])
            return os.fsdecode(data) if data is not None else None
        full = self.repo_dir / norm
        return os.readlink(full) if full.is_symlink() else None

    def entry_mode(self, path: str) -> str | None:
        """The git mode of ``path`` in the base tree ("100644", "120000", "160000"...).

        None when the base is the working tree or has no entry at ``path``.
        """
        norm = lexical_repo_path(path)
        if norm is None or self._entries is None:
            return None
        entry = self._entries.get(norm)
        return entry[0] if entry is not None else None

    def is_file(self, path: str) -> bool:
        """True when the base has a file (or symlink) at ``path``."""
        norm = lexical_repo_path(path)
        if norm is None:
            return False
        if self._entries is not None:
            return norm in self._entries
        full = self.repo_dir / norm
        return _inside(self.repo_dir, full) and full.is_file() and not full.is_symlink()

    def is_dir(self, path: str) -> bool:
        """True when ``path`` is a directory of the base."""
        norm = lexical_repo_path(path)
        if norm is None:
            return False
        if self._entries is not None:
            return norm in self._dirs
        full = self.repo_dir / norm
        return _inside(self.repo_dir, full) and full.is_dir()

    def read_bytes(self, path: str) -> bytes | None:
        """The base content of ``path``, or None when the base has no regular file there."""
        norm = lexical_repo_path(path)
        if norm is None:
            return None
        if norm in self._cache:
            return self._cache[norm]
        data: bytes | None = None
        if self._entries is not None:
            entry = self._entries.get(norm)
            if entry is not None and entry[0] not in (_SYMLINK_MODE, "160000"):
                data = self._blob(entry[1])
        else:
            full = self.repo_dir / norm
            if _inside(self.repo_dir, full) and full.is_file() and not full.is_symlink():
                try:
                    data = full.read_bytes()
                except OSError:
                    data = None
        self._cache[norm] = data
        return data

    def read_text(self, path: str) -> str | None:
        """The base content of ``path`` as text; None when absent or not UTF-8."""
        data = self.read_bytes(path)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def uncommitted(self, paths: Iterable[str]) -> dict[str, str]:
        """Which of ``paths`` differ between the working tree and ``HEAD``, and how.

        The model is shown the working tree while a pull request is built on the base
        branch, so a file the user has edited (or created) without committing is where a
        proposal can carry local work into a pull request. Values are ``modified``,
        ``untracked``, ``deleted`` or ``added`` (staged, not committed). Empty when the base
        is not a git tree, or git cannot answer (the caller has nothing to warn about).
        """
        norms = sorted({n for n in (lexical_repo_path(p) for p in paths) if n is not None})
        if self._entries is None or not norms:
            return {}
        out = self._git(
            "--literal-pathspecs",
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--no-renames",
            "--",
            *norms,
        )
        if out.returncode != 0:
            return {}
        found: dict[str, str] = {}
        for code, path in status_entries(out.stdout):
            if self._prefix and path.startswith(self._prefix):
                path = path[len(self._prefix) :]  # git reports paths from the top
            if code == "??":
                state = "untracked"
            elif "D" in code:
                state = "deleted"
            elif code[0] == "A":
                state = "added"
            else:
                state = "modified"
            found[path] = state
        return found

    def _blob(self, sha: str) -> bytes | None:
        if sha in self._blobs:
            return self._blobs[sha]
        out = self._git("cat-file", "blob", sha)
        data = out.stdout if out.returncode == 0 else None
        if data is not None and len(data) <= 4096:
            self._blobs[sha] = data  # symlink targets and small files are asked for often
        return data


def _inside(root: Path, path: Path) -> bool:
    """True when ``path``, symlinks resolved, is ``root`` or below it."""
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + os.sep)


@dataclass(frozen=True)
class FileDiff:
    """One proposal file compared with its base.

    Attributes:
        path: the path as the proposal gives it.
        status: added, modified or unchanged.
        unified: the unified diff (``git apply`` compatible); empty when unchanged.
        added: lines added.
        removed: lines removed.
        old_lines: lines of the base file (0 when added).
        new_lines: lines of the proposed file.
        binary_base: the base file is not UTF-8 text (the diff is a one-line note).
    """

    path: str
    status: FileStatus
    unified: str
    added: int
    removed: int
    old_lines: int
    new_lines: int
    binary_base: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "path": self.path,
            "status": self.status.value,
            "added": self.added,
            "removed": self.removed,
            "old_lines": self.old_lines,
            "new_lines": self.new_lines,
            "binary_base": self.binary_base,
            "diff": self.unified,
        }


@dataclass(frozen=True)
class ProposalDiff:
    """Every file of a proposal compared with the base.

    Attributes:
        files: one entry per proposal file, in proposal order.
        base: where the base came from (a ref, or "working tree").
    """

    files: list[FileDiff] = field(default_factory=list)
    base: str = "HEAD"

    @property
    def added(self) -> int:
        """Lines added over all files."""
        return sum(f.added for f in self.files)

    @property
    def removed(self) -> int:
        """Lines removed over all files."""
        return sum(f.removed for f in self.files)

    def count(self, status: FileStatus) -> int:
        """How many files have ``status``."""
        return sum(1 for f in self.files if f.status is status)

    def unified(self) -> str:
        """All files' unified diffs, one patch."""
        return "".join(f.unified for f in self.files)

    def summary(self) -> str:
        """A short human summary: one header line, then one line per file."""
        head = (
            f"{len(self.files)} file(s) against {self.base}: "
            f"{self.count(FileStatus.ADDED)} added, {self.count(FileStatus.MODIFIED)} modified, "
            f"{self.count(FileStatus.UNCHANGED)} unchanged; +{self.added} -{self.removed}"
        )
        letter = {FileStatus.ADDED: "A", FileStatus.MODIFIED: "M", FileStatus.UNCHANGED: "="}
        rows = [f"  {letter[f.status]} {safe(f.path)}  +{f.added} -{f.removed}" for f in self.files]
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "base": self.base,
            "added": self.added,
            "removed": self.removed,
            "files": [f.to_dict() for f in self.files],
        }


def _no_newline_marked(lines: Iterable[str]) -> str:
    """Join diff lines, marking a last line without ``\\n`` the way git does."""
    out: list[str] = []
    for line in lines:
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


def count_changes(old: Sequence[str], new: Sequence[str]) -> tuple[int, int]:
    """(added, removed) lines between two line lists, as a unified diff would count them."""
    added = removed = 0
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed


def diff_file(path: str, old: str | None, new: str, *, context: int = 3) -> FileDiff:
    """Compare one file's base text (None: the file is new) with its proposed text.

    Args:
        path: the repository-relative path (used in the diff headers).
        old: the base text, or None when the base has no such file.
        new: the proposed text.
        context: lines of context around each change.

    Returns:
        The file's status, unified diff and line counts.
    """
    new_lines = split_lines(new)
    if old is None:
        header = [f"diff --git a/{path} b/{path}\n", "new file mode 100644\n"]
        body = difflib.unified_diff([], new_lines, "/dev/null", f"b/{path}", n=context)
        unified = "".join(header) + _no_newline_marked(body) if new_lines else "".join(header)
        return FileDiff(path, FileStatus.ADDED, unified, len(new_lines), 0, 0, len(new_lines))
    old_lines = split_lines(old)
    if old == new:
        return FileDiff(path, FileStatus.UNCHANGED, "", 0, 0, len(old_lines), len(new_lines))
    added, removed = count_changes(old_lines, new_lines)
    body = difflib.unified_diff(old_lines, new_lines, f"a/{path}", f"b/{path}", n=context)
    unified = f"diff --git a/{path} b/{path}\n" + _no_newline_marked(body)
    return FileDiff(
        path, FileStatus.MODIFIED, unified, added, removed, len(old_lines), len(new_lines)
    )


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else ""


#: a file longer than this is not diffed line by line (the checks' per-file limit is far lower,
#: so such a file is refused anyway; a 60 MB answer must not cost seconds of difflib)
MAX_DIFF_CHARS = 2_000_000
#: ``engine.core.models.MAX_FILES_LIMIT``: no configuration allows more files in one proposal
MAX_DIFF_FILES = 100


def diff_proposal(
    proposal: Any,
    repo_dir: Path | None = None,
    *,
    ref: str | None = "HEAD",
    base: RepoBase | None = None,
    context: int = 3,
) -> ProposalDiff:
    """Compare every file of ``proposal`` with the base.

    Args:
        proposal: a ``ChangeProposal`` (its ``files`` have ``path`` and ``content``).
        repo_dir: the repository (ignored when ``base`` is given).
        ref: the git ref to compare with; None compares with the working tree.
        base: an already opened base (the checks share theirs).
        context: lines of context in the unified diffs.

    Returns:
        The per-file statuses, diffs and counts.

    Raises:
        RepoError: the repository or the ref cannot be read.
    """
    if base is None:
        if repo_dir is None:
            raise ValueError("diff_proposal needs repo_dir or base")
        base = RepoBase(repo_dir, ref)
    diffs: list[FileDiff] = []
    # more files than any configuration allows (refused by the checks): the first ones only
    for change in (getattr(proposal, "files", None) or [])[:MAX_DIFF_FILES]:
        path = _as_text(getattr(change, "path", ""))
        content = _as_text(getattr(change, "content", ""))
        if len(content) > MAX_DIFF_CHARS:  # refused by the checks anyway: no line diff
            n = content.count("\n") + (not content.endswith("\n"))
            old_n = len(split_lines((base.read_bytes(path) or b"").decode("utf-8", "replace")))
            note = f"diff --git a/{path} b/{path}\n(too large to diff: {len(content):,} chars)\n"
            status = FileStatus.MODIFIED if old_n else FileStatus.ADDED
            diffs.append(FileDiff(path, status, note, n, old_n, old_n, n))
            continue
        data = base.read_bytes(path)
        if data is None:
            diffs.append(diff_file(path, None, content, context=context))
            continue
        try:
            old = data.decode("utf-8")
        except UnicodeDecodeError:
            n = len(split_lines(content))
            note = f"diff --git a/{path} b/{path}\nBinary files a/{path} and b/{path} differ\n"
            diffs.append(FileDiff(path, FileStatus.MODIFIED, note, n, 0, 0, n, binary_base=True))
            continue
        diffs.append(diff_file(path, old, content, context=context))
    return ProposalDiff(diffs, base.describe())
