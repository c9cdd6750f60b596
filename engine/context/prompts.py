"""Prompt profiles: Markdown files with YAML front matter, found nearest first.

A profile is what the model is told it is (the system prompt) plus what the engine needs to
know around it: which checks apply to its answers and which files every change in this kind
of repository tends to touch (always shown when they exist). Example::

    ---
    name: backend-dev
    description: Backend Dev Agent (FastAPI / SQLAlchemy / Pydantic)
    checks: [branch-suffix, closes-issue, complete-files]
    always_include: [app/main.py, requirements.txt, "app/api/*/router.py"]
    examples:
      - issue: {number: 41, title: "Add a word count endpoint", body: "..."}
        files: {app/main.py: "...the file as shown..."}
        answer: {branch_suffix: ..., commit_message: ..., ..., files: [...]}
    ---
    You are an expert Backend Developer Agent...

Profiles are searched nearest first, and the first file of a name wins:

1. the repository's ``.agent-tui/prompts/NAME.md`` (a team's own agent);
2. the user's ``<platformdirs user config dir>/agent-tui/prompts/NAME.md``;
3. the profiles shipped with agent-tui (``prompts/``).

``examples`` are worked examples: an issue in a small repository (``files`` shown in full,
``tree`` the other paths) and its complete answer. They are sent before the real issue as an
earlier user/assistant exchange, formatted exactly like the real prompt and answer, because a
base model follows an example far better than instructions. A model profile's
``prompt_examples`` setting says whether they are sent.

A broken profile is an error naming its file, never silently skipped in favour of a farther
one: a user who edited a profile must learn that their edit is not what runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml

from engine.core.errors import PromptProfileError, UnknownProfileError
from engine.core.models import (
    SECTION_TITLE_PATTERN,
    AnswerShape,
    BodySection,
    ChangeProposal,
    Issue,
    issue_rule_errors,
)
from engine.core.resources import bundled_prompts_dir
from engine.core.rules import check_ids_problem

REPO_PROMPTS_DIR = Path(".agent-tui") / "prompts"
DEFAULT_PROFILE = "backend-dev"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CHECK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_ALLOWED_KEYS = (
    "name",
    "description",
    "checks",
    "always_include",
    "pr_body_sections",
    "examples",
)
_HINT = "see the 'Prompt profiles' section of the README for the format"

Origin = Literal["repo", "user", "bundled"]


@dataclass(frozen=True)
class PromptProfile:
    """One prompt profile, validated."""

    name: str
    """The profile's name, equal to its file name without ``.md``."""
    description: str
    """One line shown in lists."""
    checks: tuple[str, ...]
    """Ids of the checks that apply to this profile's proposals."""
    always_include: tuple[str, ...]
    """Repository paths or glob patterns always shown to the model when they exist."""
    system_prompt: str
    """The Markdown body: the system prompt, stripped of surrounding blank lines."""
    path: Path
    """The file it was read from."""
    origin: Origin
    """Where it was found: ``repo``, ``user`` or ``bundled``."""
    examples: tuple[WorkedExample, ...] = ()
    """Worked examples sent before the issue (when the model profile uses them)."""
    body_sections: tuple[BodySection, ...] = ()
    """The PR body's sections (``pr_body_sections``), enforced by the grammar."""


@dataclass(frozen=True)
class WorkedExample:
    """An issue in a small repository and its complete, checks-clean answer."""

    issue: Issue
    files: dict[str, str]
    """Files shown in full: path -> content."""
    tree: tuple[str, ...]
    """Every path of the example repository (the shown files included)."""
    answer: ChangeProposal


def user_prompts_dir() -> Path:
    """The user's prompt profile directory (it may not exist)."""
    return Path(platformdirs.user_config_dir("agent-tui")) / "prompts"


def repo_prompts_dir(repo_dir: Path) -> Path:
    """The repository's prompt profile directory, at the top of its work tree."""
    here = repo_dir.resolve()
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory / REPO_PROMPTS_DIR
    return here / REPO_PROMPTS_DIR


def search_path(repo_dir: Path | None = None) -> list[tuple[Origin, Path]]:
    """The directories searched for profiles, nearest first.

    Args:
        repo_dir: the repository (None: no repository layer).

    Returns:
        (origin, directory) pairs; directories may not exist.
    """
    dirs: list[tuple[Origin, Path]] = []
    if repo_dir is not None:
        dirs.append(("repo", repo_prompts_dir(repo_dir)))
    dirs.append(("user", user_prompts_dir()))
    dirs.append(("bundled", bundled_prompts_dir()))
    return dirs


def _split_front_matter(path: Path, text: str) -> tuple[dict[str, Any], str]:
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise PromptProfileError(
            f"{path}: a prompt profile starts with a '---' line opening its YAML front matter",
            hint=_HINT,
        )
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            head = "".join(lines[1:index])
            body = "".join(lines[index + 1 :])
            break
    else:
        raise PromptProfileError(
            f"{path}: the front matter is not closed by a '---' line", hint=_HINT
        )
    try:
        data = yaml.safe_load(head)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PromptProfileError(
            f"{path}: invalid YAML in the front matter{where}: {problem}", hint=_HINT
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PromptProfileError(
            f"{path}: the front matter must be a mapping of keys to values", hint=_HINT
        )
    return data, body


def _string_list(path: Path, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PromptProfileError(f"{path}: '{key}' must be a list of non-empty strings", hint=_HINT)
    return [v.strip() for v in value]


def _body_sections(path: Path, value: Any) -> tuple[BodySection, ...]:
    """The validated ``pr_body_sections``: ``[{title: Summary, kind: text}, ...]``."""
    if value is None:
        return ()
    problem = (
        "'pr_body_sections' must be a list of {title: ..., kind: text|list} mappings "
        "with plain-word titles (letters, digits, spaces; at most 40 characters)"
    )
    if not isinstance(value, list):
        raise PromptProfileError(f"{path}: {problem}", hint=_HINT)
    out: list[BodySection] = []
    for item in value:
        if (
            not isinstance(item, dict)
            or set(item) != {"title", "kind"}
            or not isinstance(item["title"], str)
            or not re.fullmatch(SECTION_TITLE_PATTERN, item["title"])
            or item["kind"] not in ("text", "list")
        ):
            raise PromptProfileError(f"{path}: {problem} (got {item!r})", hint=_HINT)
        out.append(BodySection(item["title"], item["kind"]))
    titles = [s.title.lower() for s in out]
    if len(set(titles)) != len(titles):
        raise PromptProfileError(f"{path}: 'pr_body_sections' repeats a title", hint=_HINT)
    return tuple(out)


def _examples(
    path: Path, value: Any, sections: tuple[BodySection, ...] = ()
) -> tuple[WorkedExample, ...]:
    """The validated ``examples`` of a profile's front matter."""
    from pydantic import ValidationError

    if value is None:
        return ()
    if not isinstance(value, list):
        raise PromptProfileError(f"{path}: 'examples' must be a list", hint=_HINT)
    out: list[WorkedExample] = []
    for index, item in enumerate(value):
        where = f"{path}: examples[{index}]"
        if not isinstance(item, dict) or set(item) - {"issue", "files", "tree", "answer"}:
            raise PromptProfileError(
                f"{where} must be a mapping of issue, files, tree and answer", hint=_HINT
            )
        try:
            issue = Issue.model_validate(item.get("issue"))
            answer = ChangeProposal.model_validate(item.get("answer"))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise PromptProfileError(f"{where}: {loc}: {first['msg']}", hint=_HINT) from None
        files = item.get("files") or {}
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise PromptProfileError(f"{where}.files must map paths to contents", hint=_HINT)
        tree = _string_list(path, f"examples[{index}].tree", item.get("tree"))
        broken = issue_rule_errors(answer, issue.number, AnswerShape(body_sections=sections))
        if broken:
            raise PromptProfileError(
                f"{where}.answer breaks the rules every answer is held to: {broken[0]}",
                hint=_HINT,
            )
        all_paths = tuple(sorted(set(tree) | set(files)))
        out.append(WorkedExample(issue, dict(files), all_paths, answer))
    return tuple(out)


def parse_profile(path: Path, origin: Origin = "bundled") -> PromptProfile:
    """Read and validate one profile file.

    Args:
        path: the Markdown file.
        origin: where it was found (reported back in the profile).

    Returns:
        The validated profile.

    Raises:
        PromptProfileError: naming the file and what is wrong with it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PromptProfileError(f"{path}: not UTF-8 text", hint=_HINT) from None
    except OSError as exc:
        raise PromptProfileError(f"{path}: cannot read: {exc.strerror}", hint=_HINT) from None
    data, body = _split_front_matter(path, text)
    unknown = sorted(str(k) for k in data if k not in _ALLOWED_KEYS)
    if unknown:
        raise PromptProfileError(
            f"{path}: unknown front matter key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(_ALLOWED_KEYS)})",
            hint=_HINT,
        )
    stem = path.stem
    name = data.get("name", stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PromptProfileError(
            f"{path}: 'name' must be lowercase letters, digits, '-' or '_' (got {name!r})",
            hint=_HINT,
        )
    if name != stem:
        raise PromptProfileError(
            f"{path}: 'name' is {name!r} but the file is named {path.name!r}",
            hint=f"rename the file to {name}.md or set name: {stem}",
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise PromptProfileError(f"{path}: 'description' must be a string", hint=_HINT)
    checks = _string_list(path, "checks", data.get("checks"))
    bad = [c for c in checks if not _CHECK_RE.match(c)]
    if bad:
        raise PromptProfileError(
            f"{path}: check ids are lowercase kebab-case (bad: {', '.join(map(repr, bad))})",
            hint=_HINT,
        )
    problem = check_ids_problem(checks)
    if problem is not None:
        raise PromptProfileError(f"{path}: {problem}", hint=_HINT)
    always = _string_list(path, "always_include", data.get("always_include"))
    for pattern in always:
        if pattern.startswith("/") or "\\" in pattern or ".." in pattern.split("/"):
            raise PromptProfileError(
                f"{path}: always_include entry {pattern!r} must be a repository-relative "
                "POSIX path or glob (no leading '/', no '..', no backslash)",
                hint=_HINT,
            )
    sections = _body_sections(path, data.get("pr_body_sections"))
    examples = _examples(path, data.get("examples"), sections)
    system_prompt = body.strip("\n").rstrip()
    if not system_prompt.strip():
        raise PromptProfileError(
            f"{path}: the profile has no text after its front matter (the system prompt)",
            hint=_HINT,
        )
    return PromptProfile(
        name=name,
        description=description.strip(),
        checks=tuple(dict.fromkeys(checks)),
        always_include=tuple(dict.fromkeys(always)),
        system_prompt=system_prompt + "\n",
        path=path,
        origin=origin,
        examples=examples,
        body_sections=sections,
    )


def load_profile(name: str | None = None, repo_dir: Path | None = None) -> PromptProfile:
    """The nearest profile called ``name``.

    Args:
        name: the profile name (default: ``backend-dev``).
        repo_dir: the repository whose ``.agent-tui/prompts/`` is searched first.

    Returns:
        The profile from the nearest directory that has ``NAME.md``.

    Raises:
        PromptProfileError: the nearest file of that name is broken.
        UnknownProfileError: no directory has it; the message lists the known names.
    """
    key = name or DEFAULT_PROFILE
    if not _NAME_RE.match(key):
        raise UnknownProfileError(
            f"{key!r} is not a prompt profile name (lowercase letters, digits, '-', '_')",
            hint="run `agent-tui prompt --list` to see the profiles",
        )
    for origin, directory in search_path(repo_dir):
        candidate = directory / f"{key}.md"
        if candidate.is_file():
            return parse_profile(candidate, origin)
    known = ", ".join(sorted(_names(repo_dir))) or "(none)"
    searched = ", ".join(str(d) for _o, d in search_path(repo_dir))
    raise UnknownProfileError(
        f"no prompt profile named {key!r}; known profiles: {known}",
        hint=f"add {key}.md to one of: {searched}",
    )


def _names(repo_dir: Path | None) -> set[str]:
    names: set[str] = set()
    for _origin, directory in search_path(repo_dir):
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.md") if p.is_file())
    return names


def discover_profiles(
    repo_dir: Path | None = None,
) -> tuple[list[PromptProfile], list[PromptProfileError]]:
    """Every profile visible from ``repo_dir`` (nearest of each name), and the broken ones.

    Why both: a list screen shows the good profiles and, separately, each broken file with
    its error, instead of failing as a whole because one file has a typo.

    Args:
        repo_dir: the repository whose ``.agent-tui/prompts/`` is searched first.

    Returns:
        (profiles sorted by name, errors of the nearest files that did not parse).
    """
    profiles: list[PromptProfile] = []
    errors: list[PromptProfileError] = []
    seen: set[str] = set()
    for origin, directory in search_path(repo_dir):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.md")):
            if not path.is_file() or path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                profiles.append(parse_profile(path, origin))
            except PromptProfileError as exc:
                errors.append(exc)
    return sorted(profiles, key=lambda p: p.name), errors


def list_profiles(repo_dir: Path | None = None) -> list[PromptProfile]:
    """Every profile visible from ``repo_dir``, nearest of each name, sorted by name.

    Raises:
        PromptProfileError: the first broken profile file (by name).
    """
    profiles, errors = discover_profiles(repo_dir)
    if errors:
        raise errors[0]
    return profiles
