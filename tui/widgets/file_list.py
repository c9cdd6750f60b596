"""The proposal's files with added/modified badges, line counts and finding markers."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

MARKS = {"error": ("✗", "bold red"), "warning": ("!", "bold yellow"), "info": ("i", "cyan")}
BADGES = {"added": ("A", "bold green"), "modified": ("M", "bold yellow"), "unchanged": ("=", "dim")}


def tail(text: str, width: int) -> str:
    """``text`` cut from the start to ``width`` cells (``…endpoints/items.py``): the end of
    a path names the file, its start is the part the user can guess."""
    if width <= 0 or cell_len(text) <= width:
        return text
    if width == 1:
        return "…"
    out = ""
    for char in reversed(text):
        if cell_len(out) + cell_len(char) > width - 1:
            break
        out = char + out
    return "…" + out


def file_label(
    diff: Any, findings: list[Any], name: str | None = None, width: int | None = None
) -> Text:
    """``A ✗1 !2 path  +12 -0`` for one ``engine.review.diff.FileDiff`` (markers first: they matter
    most). ``name`` replaces the path (under a directory header, the file's own name); with
    ``width`` a long name is cut from its start, keeping the markers and the counts."""
    status = getattr(diff.status, "value", str(diff.status))
    letter, style = BADGES.get(status, ("?", ""))
    label = Text.assemble((letter, style), no_wrap=True, overflow="ellipsis")
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    for severity in ("error", "warning", "info"):
        if counts.get(severity):
            mark, mark_style = MARKS[severity]
            label.append(f" {mark}{counts[severity]}", style=mark_style)
    shown = diff.path if name is None else name
    numbers = f"  +{diff.added} -{diff.removed}"
    if width is not None:
        indent = len(shown) - len(shown.lstrip(" "))
        name_len = cell_len(shown) - indent
        room = width - label.cell_len - 1 - indent
        if room - cell_len(numbers) < name_len:
            numbers = ""  # the name matters more than the line counts (the diff has them)
        shown = " " * indent + tail(shown[indent:], max(8, room - cell_len(numbers)))
    label.append(f" {shown}")
    label.append(numbers, style="dim")
    return label


class FileList(OptionList):
    """Files of the proposal; the highlighted one is shown in the diff view.

    Options are identified by their position, never by their path: a proposal may name the
    same path twice (or two paths differing in case), and widget ids must be unique.
    """

    DEFAULT_CSS = """
    FileList {
        width: 30%; min-width: 26; max-width: 60; height: 1fr; border: none;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    FileList:focus { border: none; }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self._paths: dict[str, str] = {}
        """option id -> the file's path."""
        self._review: Any = None
        self._width = 0

    def _label_width(self) -> int | None:
        width = self.scrollable_content_region.width
        return width - 1 if width > 8 else None

    def set_review(self, review: Any) -> None:
        """List the files of ``review`` (an ``engine.flow.run_events.Review``) as a tree,
        keeping the selection.

        Files at the top of the repository come first, then one header per directory (in the
        order the proposal first names it) with its files under it by name. Headers are
        disabled options, so the cursor moves from file to file. Long directory names and
        file names are cut from their start, so the end of a path stays readable.
        """
        self._review = review
        width = self._label_width()
        self._width = width or 0
        keep = self.current_path
        previous = self.highlighted or 0
        self.clear_options()
        self._paths = {}
        groups: dict[str, list[Any]] = {"": []}
        for diff in review.diff.files:
            groups.setdefault(diff.path.rpartition("/")[0], []).append(diff)
        options: list[Option] = []
        for folder, diffs in groups.items():
            if folder and diffs:
                header = f"{folder}/" if width is None else tail(f"{folder}/", width)
                options.append(Option(Text(header, style="bold"), disabled=True))
            for diff in diffs:
                name = f"  {diff.path.rpartition('/')[2]}" if folder else None
                label = file_label(diff, review.findings_for(diff.path), name, width)
                option_id = f"file-{len(self._paths)}"
                self._paths[option_id] = diff.path
                options.append(Option(label, id=option_id))
        self.add_options(options)
        files = [i for i, o in enumerate(options) if not o.disabled]
        if not files:
            return
        by_path: dict[str, int] = {}
        for i in files:
            by_path.setdefault(self._paths[str(options[i].id)], i)
        if keep in by_path:
            self.highlighted = by_path[keep]
        else:  # the kept file was dropped: the next one down, else the last
            self.highlighted = next((i for i in files if i >= previous), files[-1])

    def on_resize(self) -> None:
        if self._review is not None and (self._label_width() or 0) != self._width:
            self.set_review(self._review)

    @property
    def paths(self) -> list[str]:
        """The listed files, in list order (directory headers left out)."""
        return [self._paths[o.id] for o in self.options if o.id in self._paths and not o.disabled]

    @property
    def current_path(self) -> str | None:
        if self.highlighted is None or self.option_count == 0:
            return None
        option = self.get_option_at_index(self.highlighted)
        return None if option.disabled or option.id is None else self._paths.get(option.id)
