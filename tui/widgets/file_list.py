"""The proposal's files with added/modified badges, line counts and finding markers."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

MARKS = {"error": ("✗", "bold red"), "warning": ("!", "bold yellow"), "info": ("i", "cyan")}
BADGES = {"added": ("A", "bold green"), "modified": ("M", "bold yellow"), "unchanged": ("=", "dim")}


def file_label(diff: Any, findings: list[Any]) -> Text:
    """``A ✗1 !2 path  +12 -0`` for one ``engine.diff.FileDiff`` (markers first: they matter
    most and long paths are cut at the end)."""
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
    label.append(f" {diff.path}")
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
        """List the files of ``review`` (an ``engine.session.Review``), keeping the selection."""
        current = self.highlighted
        self.clear_options()
        for diff in review.diff.files:
            self.add_option(Option(file_label(diff, review.findings_for(diff.path)), id=diff.path))
        if review.diff.files:
            self.highlighted = min(current or 0, len(review.diff.files) - 1)

    @property
    def current_path(self) -> str | None:
        if self.highlighted is None or self.option_count == 0:
            return None
        return self.get_option_at_index(self.highlighted).id
