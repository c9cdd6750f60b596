"""The proposal's files with added/modified badges, line counts and finding markers."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

MARKS = {"error": ("✗", "bold red"), "warning": ("!", "bold yellow"), "info": ("i", "cyan")}
BADGES = {"added": ("A", "bold green"), "modified": ("M", "bold yellow"), "unchanged": ("=", "dim")}


def file_label(diff: Any, findings: list[Any], name: str | None = None) -> Text:
    """``A ✗1 !2 path  +12 -0`` for one ``engine.diff.FileDiff`` (markers first: they matter
    most and long paths are cut at the end). ``name`` replaces the path (under a directory
    header, the file's own name)."""
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
    label.append(f" {diff.path if name is None else name}")
    label.append(f"  +{diff.added} -{diff.removed}", style="dim")
    return label


class FileList(OptionList):
    """Files of the proposal; the highlighted one is shown in the diff view."""

    DEFAULT_CSS = """
    FileList {
        width: 30%; min-width: 26; max-width: 60; height: 1fr; border: none;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    FileList:focus { border: none; }
    """

    def set_review(self, review: Any) -> None:
        """List the files of ``review`` (an ``engine.session.Review``) as a tree, keeping the
        selection.

        Files at the top of the repository come first, then one header per directory (in the
        order the proposal first names it) with its files under it by name. Headers are
        disabled options, so the cursor moves from file to file.
        """
        keep = self.current_path
        previous = self.highlighted or 0
        self.clear_options()
        groups: dict[str, list[Any]] = {"": []}
        for diff in review.diff.files:
            groups.setdefault(diff.path.rpartition("/")[0], []).append(diff)
        options: list[Option] = []
        for folder, diffs in groups.items():
            if folder and diffs:
                options.append(Option(Text(f"{folder}/", style="bold"), disabled=True))
            for diff in diffs:
                name = f"  {diff.path.rpartition('/')[2]}" if folder else None
                label = file_label(diff, review.findings_for(diff.path), name)
                options.append(Option(label, id=diff.path))
        self.add_options(options)
        files = [i for i, o in enumerate(options) if not o.disabled]
        if not files:
            return
        by_path = {options[i].id: i for i in files}
        if keep in by_path:
            self.highlighted = by_path[keep]
        else:  # the kept file was dropped: the next one down, else the last
            self.highlighted = next((i for i in files if i >= previous), files[-1])

    @property
    def paths(self) -> list[str]:
        """The listed files, in list order (directory headers left out)."""
        return [o.id for o in self.options if o.id is not None and not o.disabled]

    @property
    def current_path(self) -> str | None:
        if self.highlighted is None or self.option_count == 0:
            return None
        option = self.get_option_at_index(self.highlighted)
        return None if option.disabled else option.id
