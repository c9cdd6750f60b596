"""Path rules: is a proposal path safe to write (lexical, working tree, base tree)?

Why three walks: the string alone refuses what must never reach a filesystem (absolute,
``..``, ``.git``, control characters, non-portable spellings); the working tree shows the
symlinks, directories and special files a write would land on; and the base git tree is what
the publisher checks out, so a symlink or file there matters even when the working tree
differs. ``safe_target`` is the one door through which the publisher turns a proposal path
into a filesystem path. Rules that compare paths with each other (duplicates, case
conflicts) are in the orchestrator, which sees the whole proposal.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from engine.core.errors import UnsafePathError
from engine.core.models import PATH_MAX
from engine.review.checks.registry import CheckLimits, Finding, finding
from engine.review.diff import RepoBase

_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def _is_git_segment(segment: str) -> bool:
    """``.git`` in any case, with the trailing dots/spaces Windows ignores (``.GIT.``)."""
    return segment.rstrip(". ").casefold() == ".git"


#: invisible characters that make a path look like another one ("Trojan Source" bidi
#: overrides, zero-width characters, the byte order mark)
_INVISIBLE = {
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
    "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\ufeff",
}  # fmt: skip


def _bad_path_char(c: str) -> bool:
    """C0/C1 controls, DEL, lone surrogates (unencodable) and invisible direction marks."""
    o = ord(c)
    return o < 32 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF or c in _INVISIBLE


#: the proposal model's bounds on a path (``engine.core.models.PATH_PATTERN``): publishing refuses
#: what breaks them, so the checks say it first, each with its own code
_SEGMENT_MAX = 64


_MAX_SEGMENTS = 12


_PORTABLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/")


_SEGMENT_START_RE = re.compile(r"[.]?[A-Za-z0-9_]")


def _model_path_findings(raw: str, segments: list[str], *, control: bool) -> list[Finding]:
    out: list[Finding] = []
    odd = sorted({c for c in raw if c not in _PORTABLE_CHARS and c != "\\"})
    if odd and not control:
        shown = ", ".join(f"{c!r} U+{ord(c):04X}" for c in odd[:4])
        out.append(
            finding(
                "path-not-portable",
                f"the path holds {shown}: only ASCII letters, digits, '_', '.', '-' are "
                "allowed (a Cyrillic 'а' looks like a Latin 'a')",
                path=raw,
                fix="spell the path with ASCII letters, digits, '_', '.' and '-'",
            )
        )
    bad_start = [s for s in segments if s not in ("", ".", "..") and not _SEGMENT_START_RE.match(s)]
    if bad_start and not odd:
        out.append(
            finding(
                "path-segment-start",
                f"the segment {bad_start[0]!r} starts with {bad_start[0][:1]!r}; a leading '-' "
                "reads as an option to git and shells",
                path=raw,
                fix="start every segment with a letter, digit or '_' (or '.' then one)",
            )
        )
    if len(segments) > _MAX_SEGMENTS:
        out.append(
            finding(
                "path-too-deep",
                f"the path has {len(segments)} segments; at most {_MAX_SEGMENTS} are allowed",
                path=raw,
                fix="use a shallower path",
            )
        )
    return out


#: the path rules after which a path must not reach the filesystem at all
_UNSAFE_CODES = frozenset(
    {"path-control-char", "path-backslash", "path-absolute", "path-drive", "path-traversal"}
    | {"path-too-long", "path-git-dir"}
)


def lexical_path_findings(raw: object, limits: CheckLimits) -> tuple[list[Finding], str | None]:
    """Rules that need only the string. Returns (findings, normalised path or None).

    The normalised path is None when the path must not reach the filesystem at all.
    """
    if not isinstance(raw, str):
        return [
            finding(
                "proposal-malformed",
                f"a file path is {type(raw).__name__}, not text",
                fix="give every file a repository-relative path string",
            )
        ], None
    if not raw.strip():
        return [
            finding("path-empty", "a file has an empty path", path=raw, fix="name the file")
        ], None
    segments = raw.split("/")
    out = _spelling_findings(raw)
    out += _segment_findings(raw, segments)
    out += _length_findings(raw, segments, limits)
    control = any(f.code == "path-control-char" for f in out)
    out += _model_path_findings(raw, segments, control=control)
    if any(_is_git_segment(s) for s in segments):
        out.append(
            finding(
                "path-git-dir",
                "the path is inside .git; writing there changes git itself (hooks, config)",
                path=raw,
                fix="write project files only, never under .git",
            )
        )
    if any(f.code in _UNSAFE_CODES for f in out):
        return out, None
    norm = posixpath.normpath(raw)
    if norm in (".", "") or norm.startswith("../"):
        # unreachable after the checks above; kept as a last guard
        return out + [finding("path-traversal", "the path leaves the repository", path=raw)], None
    return out, norm


def _spelling_findings(raw: str) -> list[Finding]:
    """Characters and prefixes no repository-relative POSIX path has."""
    out: list[Finding] = []
    bad = [c for c in raw if _bad_path_char(c)]
    if bad:
        out.append(
            finding(
                "path-control-char",
                f"the path contains {len(bad)} control or unencodable character(s) "
                f"({', '.join(sorted({repr(c) for c in bad})[:3])})",
                path=raw,
                fix="use printable characters only",
            )
        )
    if "\\" in raw:
        out.append(
            finding(
                "path-backslash",
                "the path uses backslashes; paths are POSIX, separated by '/'",
                path=raw,
                fix="write the path with '/' separators",
            )
        )
    if raw.startswith("/"):
        out.append(
            finding(
                "path-absolute",
                "the path is absolute; it must be relative to the repository root",
                path=raw,
                fix="drop the leading '/'",
            )
        )
    if _DRIVE_RE.match(raw):
        out.append(
            finding(
                "path-drive",
                "the path starts with a drive letter",
                path=raw,
                fix="use a repository-relative path",
            )
        )
    return out


def _segment_findings(raw: str, segments: list[str]) -> list[Finding]:
    """``..`` segments (leaving the repository), ``.`` and empty ones (not normalised)."""
    out: list[Finding] = []
    if ".." in segments:
        out.append(
            finding(
                "path-traversal",
                "the path has a '..' segment and could leave the repository",
                path=raw,
                fix="use a path inside the repository without '..'",
            )
        )
    inner = segments[1:] if raw.startswith("/") else segments
    if any(s in ("", ".") for s in inner):
        out.append(
            finding(
                "path-not-normalised",
                "the path has '.' or empty segments or a trailing '/'",
                path=raw,
                fix=f"write it as {posixpath.normpath(raw)!r}",
            )
        )
    return out


def _length_findings(raw: str, segments: list[str], limits: CheckLimits) -> list[Finding]:
    """The path or one segment longer than the model's pattern or the filesystem allows."""
    encoded = raw.encode("utf-8", "surrogatepass")
    longest = max(len(s) for s in segments)
    # a hidden file's leading dot does not count (the model's pattern: ``[.]?`` then 1-64)
    over_segment = any(len(s) - s.startswith(".") > _SEGMENT_MAX for s in segments)
    if (
        len(encoded) > limits.max_path_bytes
        or any(len(s.encode("utf-8", "surrogatepass")) > limits.max_segment_bytes for s in segments)
        or len(raw) > PATH_MAX
        or over_segment
    ):
        return [
            finding(
                "path-too-long",
                f"the path is {len(raw)} characters (limit {PATH_MAX}) with a longest segment "
                f"of {longest} (limit {_SEGMENT_MAX})",
                path=raw,
                fix="use a shorter path",
            )
        ]
    return []


def _inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root + os.sep)


def _in_git_dir(root: str, real: str) -> bool:
    rel = os.path.relpath(real, root)
    return _is_git_segment(rel.split(os.sep)[0])


def _filesystem_path_findings(root: Path, norm: str, raw: str) -> list[Finding]:
    """Walk ``norm`` component by component in the working tree, following symlinks."""
    root_s = str(root)
    cur = root_s
    parts = norm.split("/")
    out: list[Finding] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        shown = "/".join(parts[: i + 1])
        found, st, cur = _fs_step(root_s, os.path.join(cur, part), shown, raw)
        out += found
        if st is None:
            return out
        if not last and not stat.S_ISDIR(st.st_mode):
            return out + [
                finding(
                    "path-parent-is-file",
                    f"{shown!r} is a file, not a directory",
                    path=raw,
                    fix="choose a path whose parents are directories",
                )
            ]
        if last and stat.S_ISDIR(st.st_mode):
            out.append(
                finding(
                    "path-is-directory",
                    "the path is an existing directory",
                    path=raw,
                    fix="name a file inside it",
                )
            )
        elif last and not stat.S_ISREG(st.st_mode):
            out.append(
                finding(
                    "path-not-regular-file",
                    "the path is a FIFO, socket or device, not a file",
                    path=raw,
                    fix="choose another path",
                )
            )
    return out


#: one step of the working-tree walk: (findings, the entry's stat or None to stop, where
#: the walk goes on from)
_FsStep = tuple[list[Finding], os.stat_result | None, str]


def _fs_step(root_s: str, nxt: str, shown: str, raw: str) -> _FsStep:
    """Look at one component of the path (``nxt``), through it when it is a symlink."""
    try:
        st = os.lstat(nxt)
    except FileNotFoundError:
        return [], None, nxt
    except NotADirectoryError:
        return (
            [
                finding(
                    "path-parent-is-file",
                    f"{posixpath.dirname(shown)!r} is a file, not a directory",
                    path=raw,
                    fix="choose a path whose parents are directories",
                )
            ],
            None,
            nxt,
        )
    except OSError as exc:
        return (
            [
                finding(
                    "path-unresolvable",
                    f"{shown!r} cannot be examined: {exc.strerror or exc}",
                    path=raw,
                    fix="choose another path",
                )
            ],
            None,
            nxt,
        )
    if not stat.S_ISLNK(st.st_mode):
        return [], st, nxt
    return _fs_through_symlink(root_s, nxt, shown, raw)


def _fs_through_symlink(root_s: str, nxt: str, shown: str, raw: str) -> _FsStep:
    """A symlink on the way: refused when it leaves the repository or enters .git."""
    try:
        real = os.path.realpath(nxt, strict=True)
    except FileNotFoundError:
        real = os.path.realpath(nxt)  # dangling: writing creates its target
    except OSError as exc:
        return (
            [
                finding(
                    "path-unresolvable",
                    f"the symlink {shown!r} cannot be resolved: {exc.strerror or exc}",
                    path=raw,
                    fix="choose a path that does not go through this symlink",
                )
            ],
            None,
            nxt,
        )
    if not _inside(root_s, real):
        return (
            [
                finding(
                    "path-symlink-escape",
                    f"{shown!r} is a symlink to {real}, outside the repository",
                    path=raw,
                    fix="choose a path that does not go through this symlink",
                )
            ],
            None,
            nxt,
        )
    if _in_git_dir(root_s, real):
        return (
            [
                finding(
                    "path-symlink-escape",
                    f"{shown!r} is a symlink into .git",
                    path=raw,
                    fix="choose a path that does not go through this symlink",
                )
            ],
            None,
            nxt,
        )
    out = [
        finding(
            "path-through-symlink",
            f"{shown!r} is a symlink to {os.path.relpath(real, root_s)!r}; the write lands there",
            path=raw,
            fix="write the symlink's target path instead",
        )
    ]
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return out, None, real
    except OSError as exc:
        return (
            out
            + [
                finding(
                    "path-unresolvable",
                    f"{shown!r} cannot be examined: {exc.strerror or exc}",
                    path=raw,
                )
            ],
            None,
            real,
        )
    return out, st, real


_MAX_SYMLINK_HOPS = 40


def _tree_path_findings(base: RepoBase, norm: str, raw: str) -> list[Finding]:
    """The same walk in the base git tree: the publisher writes into a checkout of it."""
    parts = norm.split("/")
    out: list[Finding] = []
    hops = 0
    i = 0
    while i < len(parts):
        prefix = "/".join(parts[: i + 1])
        target = base.symlink_target(prefix)
        if target is None:
            if i < len(parts) - 1:
                stop = _tree_parent_findings(base, prefix, raw)
                if stop:
                    return out + stop
            i += 1
            continue
        hops += 1
        if hops > _MAX_SYMLINK_HOPS:
            return out + [
                finding(
                    "path-unresolvable",
                    f"too many symlinks resolving {raw!r} in {base.describe()}",
                    path=raw,
                )
            ]
        parts, stop = _tree_follow(base, prefix, target, parts[i + 1 :], raw)
        if stop:
            return out + stop
        out.append(
            finding(
                "path-through-symlink",
                f"{prefix!r} is a symlink to {target!r} in {base.describe()}; "
                "the write lands there",
                path=raw,
                fix="write the symlink's target path instead",
            )
        )
        i = 0
    resolved = "/".join(parts)
    if base.is_dir(resolved) or base.entry_mode(resolved) == "160000":
        out.append(
            finding(
                "path-is-directory",
                f"the path is a directory in {base.describe()}",
                path=raw,
                fix="name a file inside it",
            )
        )
    return out


def _tree_parent_findings(base: RepoBase, prefix: str, raw: str) -> list[Finding]:
    """A parent of the path that is a file (or a submodule) in the base tree: the walk stops."""
    if not base.is_file(prefix):
        return []
    if base.entry_mode(prefix) == "160000":
        return [
            finding(
                "path-is-directory",
                f"{prefix!r} is a git submodule",
                path=raw,
                fix="change the submodule in its own repository",
            )
        ]
    return [
        finding(
            "path-parent-is-file",
            f"{prefix!r} is a file in {base.describe()}, not a directory",
            path=raw,
            fix="choose a path whose parents are directories",
        )
    ]


def _tree_follow(
    base: RepoBase, prefix: str, target: str, rest: list[str], raw: str
) -> tuple[list[str], list[Finding]]:
    """The path's parts after the symlink ``prefix`` -> ``target``, or why the walk stops."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(prefix), target))
    if (
        target.startswith("/")
        or _DRIVE_RE.match(target)
        or joined == ".."
        or joined.startswith("../")
    ):
        return [], [
            finding(
                "path-symlink-escape",
                f"{prefix!r} is a symlink to {target!r} in {base.describe()}, "
                "outside the repository",
                path=raw,
                fix="choose a path that does not go through this symlink",
            )
        ]
    parts = ([] if joined == "." else joined.split("/")) + rest
    if parts and _is_git_segment(parts[0]):
        return parts, [
            finding(
                "path-symlink-escape",
                f"{prefix!r} is a symlink into .git in {base.describe()}",
                path=raw,
                fix="choose a path that does not go through this symlink",
            )
        ]
    if not parts:
        return parts, [finding("path-is-directory", "the path is the repository root", path=raw)]
    return parts, []


def _dedup(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str | None]] = set()
    out = []
    for f in findings:
        key = (f.code, f.path)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def path_findings(
    raw: object,
    repo_dir: Path,
    *,
    base: RepoBase | None = None,
    limits: CheckLimits | None = None,
) -> list[Finding]:
    """Every rule about one path on its own (lexical, working tree, base tree).

    Args:
        raw: the path as the proposal gives it (any type: it is untrusted).
        repo_dir: the repository directory.
        base: the base tree, also walked for symlinks and files when it is a git tree.
        limits: path length limits.

    Returns:
        The findings for this path (cross-path rules such as duplicates are not here).
    """
    limits = limits or CheckLimits()
    root = Path(os.path.realpath(repo_dir))
    out, norm = lexical_path_findings(raw, limits)
    if norm is None:
        return out
    assert isinstance(raw, str)
    out += _filesystem_path_findings(root, norm, raw)
    if base is not None and base.is_git:
        out += _tree_path_findings(base, norm, raw)
    return _dedup(out)


def safe_target(repo_dir: Path, path: str) -> Path:
    """Resolve a proposal path to the file to write, inside ``repo_dir``, or refuse.

    The publisher calls this before writing any file (in its worktree, so ``repo_dir`` is
    that worktree). Symlinks that stay inside the repository are followed: the returned
    path is the real file the write lands on.

    Args:
        repo_dir: the directory the file is written under.
        path: the proposal's path (untrusted).

    Returns:
        The absolute, symlink-free path to write.

    Raises:
        UnsafePathError: the path breaks a path rule of severity error (it would leave the
            repository, write into .git, overwrite a directory...).
    """
    root = Path(os.path.realpath(repo_dir))
    errors = [f for f in path_findings(path, root) if f.severity == "error"]
    if errors:
        first = errors[0]
        raise UnsafePathError(
            f"{path!r}: {first.message} [{first.code}]",
            hint=first.fix or "choose a repository-relative path inside the repository",
        )
    norm = posixpath.normpath(path)
    target = os.path.realpath(root / norm)
    root_s = str(root)
    if not _inside(root_s, target) or target == root_s or _in_git_dir(root_s, target):
        # defence in depth: the rules above should already have refused this
        raise UnsafePathError(
            f"{path!r} resolves to {target}, outside the repository's files",
            hint="choose a repository-relative path inside the repository",
        )
    return Path(target)
