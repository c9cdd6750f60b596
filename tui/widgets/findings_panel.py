"""The checks' findings: severity, code, where, what, and how to fix it."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.widgets.file_list import MARKS


def render_findings(findings: list[Any], *, acknowledged: bool = False) -> RenderableType:
    """Every finding on two lines (what, then the fix), errors first."""
    if not findings:
        return Text("✓ no findings: the checks found nothing to report", style="green")
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = sum(1 for f in findings if f.severity == "warning")
    infos = len(findings) - errors - warnings
    head = Text.assemble(
        ("Findings ", "bold"),
        (f"{errors} error{'s' if errors != 1 else ''}", "bold red" if errors else "dim"),
        " · ",
        (f"{warnings} warning{'s' if warnings != 1 else ''}", "bold yellow" if warnings else "dim"),
        (" (acknowledged)" if acknowledged and warnings else "", "dim"),
        " · ",
        (f"{infos} info", "dim"),
    )
    if errors:
        head.append("  errors block publishing", style="red")
    lines: list[RenderableType] = [head]
    for f in findings:
        mark, style = MARKS.get(f.severity, ("?", ""))
        where = f.location() if hasattr(f, "location") else (f.path or "")
        line = Text.assemble((f"{mark} ", style), (f"{f.code} ", "bold"))
        if where:
            line.append(f"{where}: ", style="dim")
        line.append(f.message)
        lines.append(line)
        if f.fix:
            fix = Text(f"    fix: {f.fix}", style="dim")
            if f.fixable:
                fix.append("  (f fixes it)", style="italic")
            lines.append(fix)
    return Group(*lines)


class FindingsPanel(VerticalScroll):
    """Scrollable list of findings."""

    DEFAULT_CSS = """
    FindingsPanel { height: 7; border-top: hkey $panel; padding: 0 1; }
    """

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("", id="findings-body")

    def show(self, findings: list[Any], *, acknowledged: bool = False) -> None:
        self.query_one("#findings-body", Static).update(
            render_findings(findings, acknowledged=acknowledged)
        )
