"""The repository's directories and top-level files: where a proposal may write.

``AnswerShape.new_file_dirs`` bounds the paths of an answer to the repository's own layout
(``[generation] path_scope = "tree"``). It is read from git's index (``git ls-files``, the
files the context is built from), not from the disk, so build outputs and ignored folders
never widen it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from engine.core.gitcmd import GitError, run_git
from engine.core.models import MAX_SHAPE_DIRS, AnswerShape, BodySection


def tracked_layout(repo: Path) -> tuple[list[str], list[str]]:
    """The directories holding tracked files (every level) and the tracked top-level files.

    Returns:
        ``(dirs, top_files)``, each sorted; empty when the repository cannot be read.
    """
    try:
        out = run_git(repo, "ls-files", "-z").stdout
    except GitError:
        return [], []
    dirs: set[str] = set()
    top: set[str] = set()
    for path in filter(None, out.split("\0")):
        parents = PurePosixPath(path).parents
        if len(parents) == 1:
            top.add(path)
        for parent in list(parents)[:-1]:
            dirs.add(parent.as_posix())
    return sorted(dirs), sorted(top)


def answer_shape(
    repo: Path,
    sections: tuple[BodySection, ...],
    named_paths: list[str],
    path_scope: str = "tree",
) -> AnswerShape:
    """The shape of an answer in ``repo``: the profile's body sections and, with
    ``path_scope`` ``tree``, the repository's directories (up to ``MAX_SHAPE_DIRS``; a
    larger tree is left unbounded rather than cut, which would refuse real places).

    Args:
        repo: the repository's work tree.
        sections: the prompt profile's ``pr_body_sections``.
        named_paths: paths the issue names (they may not exist yet).
        path_scope: ``tree`` or ``any`` (``[generation] path_scope``).
    """
    if path_scope != "tree":
        return AnswerShape(body_sections=sections)
    dirs, top = tracked_layout(repo)
    if not dirs and not top or len(dirs) > MAX_SHAPE_DIRS:
        return AnswerShape(body_sections=sections)
    fixed = tuple(dict.fromkeys([*top, *named_paths]))
    return AnswerShape(body_sections=sections, new_file_dirs=tuple(dirs), fixed_paths=fixed)
