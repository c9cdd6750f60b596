"""The Preview screen: review the proposal file by file, fix it, edit it, or regenerate it.

Nothing here touches the repository: edits change the proposal in memory (``IssueRun``), the
checks run again in a worker after each change, and only the publish plan (``p``, then its
own confirmation key) writes anything.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, OptionList, Static

from engine.core.textsafe import safe
from engine.flow.issue_run import IssueRun
from engine.flow.run_events import Review
from tui.messages import ChecksCompleted
from tui.screens.base import AgentScreen
from tui.widgets.diff_view import DiffView
from tui.widgets.file_list import FileList
from tui.widgets.findings_panel import FindingsPanel
from tui.widgets.status_bar import StatusBar

#: the changes ctrl+z can undo, as the notification names them
UNDO_WORDS = {
    "drop_file": "dropped {path}",
    "edit_file": "edit of {path}",
    "fix": "automatic fixes",
    "edit": "edit of the details",
}


class PreviewScreen(AgentScreen):
    """The proposal: files, diffs, findings, and what can be done about them."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # most used first, short labels: at 80 columns the footer shows them all
        Binding("p", "publish", "Publish", id="publish"),
        Binding("r", "regenerate", "Regenerate", id="regenerate"),
        Binding("e", "edit_file", "Edit", id="edit_file"),
        Binding("d", "drop_file", "Drop", id="drop_file"),
        Binding("f", "apply_fixes", "Fix", id="apply_fixes"),
        Binding("t", "edit_details", "Details", id="edit_details"),
        Binding("E", "external_edit", "Edit in $EDITOR", id="external_edit", show=False),
        Binding("c", "recheck", "Re-check", id="recheck", show=False),
        Binding("v", "toggle_split", "Split/unified", id="toggle_split", show=False),
        Binding("ctrl+z", "undo", "Undo", id="undo", show=False),
        Binding("escape", "back", "Back", id="back_preview"),
    ]

    def __init__(self, run: IssueRun) -> None:
        super().__init__()
        self.run = run
        self.split: bool | None = None
        self.busy = False
        self.undo_stack: list[tuple[str, Any]] = []
        """(what changed, the proposal before it), latest last: ctrl+z puts it back."""

    @property
    def review(self) -> Review:
        assert self.run.review is not None, "the preview needs a proposal"
        return self.run.review

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("", id="preview-meta")
        with Horizontal(id="preview-main"):
            yield FileList(id="files")
            yield DiffView(id="diff")
        yield FindingsPanel(id="findings")
        yield Footer()

    def on_mount(self) -> None:
        issue = self.run.issue
        self.query_one(StatusBar).set_left(f"agent-tui · #{issue.number} {issue.title} · preview")
        self.agent_app.refresh_badges()
        self.show_review(self.review)
        self.query_one(FileList).focus()

    # -- display ---------------------------------------------------------------------------
    def branch_name(self) -> str:
        prefix = self.run.workspace.config.publish.branch_prefix
        return f"{prefix}{self.run.issue.number}-{self.review.proposal.branch_suffix}"

    def show_review(self, review: Review) -> None:
        p = review.proposal
        stats = review.stats
        meta = Text.assemble(
            ("branch ", "dim"),
            (self.branch_name(), "bold"),
            ("  commit ", "dim"),
            (p.commit_message, ""),
            ("\nPR ", "dim"),
            (p.pr_title, "bold"),
        )
        if stats is not None and stats.completion_tokens:
            meta.append(
                f"  ({stats.completion_tokens} tokens, {stats.tokens_per_s:.1f} tok/s)", style="dim"
            )
        self.query_one("#preview-meta", Static).update(meta)
        files = self.query_one(FileList)
        files.set_review(review)
        self.query_one(FindingsPanel).show(review.findings, acknowledged=review.acknowledged)
        self._show_diff()

    def _show_diff(self) -> None:
        path = self.query_one(FileList).current_path
        view = self.query_one(DiffView)
        if path is None:
            view.show_text("the proposal has no files (r regenerates)")
            return
        content = next((f.content for f in self.review.proposal.files if f.path == path), "")
        view.show(path, self.review.base_text(path), content, split=self.split)

    @on(OptionList.OptionHighlighted, "#files")
    def _file_highlighted(self) -> None:
        self._show_diff()

    # -- checks in a worker ----------------------------------------------------------------
    def change(self, what: str, **kwargs: Any) -> None:
        """Apply an edit (``IssueRun`` method ``what``) and re-run the checks in a worker."""
        if self.busy:
            self.notify("still checking the last change…", severity="warning")
            return
        self.busy = True
        if what in UNDO_WORDS:
            label = UNDO_WORDS[what].format(path=kwargs.get("path", ""))
            self.undo_stack.append((label, self.review.proposal))
        self.query_one(FindingsPanel).query_one("#findings-body", Static).update(
            Text("checking…", style="dim italic")
        )
        self.apply_change(what, kwargs)

    @work(thread=True, exclusive=True, exit_on_error=False, group="checks")
    def apply_change(self, what: str, kwargs: dict[str, Any]) -> None:
        try:
            review = getattr(self.run, what)(**kwargs)
        finally:
            self.busy = False
        self.post_message(ChecksCompleted(review))

    def on_worker_error(self, worker: Any) -> None:
        if worker.group == "checks":
            self.busy = False
            self.show_review(self.review)

    def on_checks_completed(self, message: ChecksCompleted) -> None:
        self.busy = False
        self.show_review(message.result)

    # -- actions ---------------------------------------------------------------------------
    def action_publish(self) -> None:
        self.agent_app.open_publish_plan(self.run)

    def action_edit_file(self) -> None:
        path = self.query_one(FileList).current_path
        if path is None:
            return
        content = next(f.content for f in self.review.proposal.files if f.path == path)

        def done(new: str | None) -> None:
            if new is not None and new != content:
                self.change("edit_file", path=path, content=new)

        self.agent_app.open_edit_file(path, content, done)

    def action_external_edit(self) -> None:
        path = self.query_one(FileList).current_path
        if path is None:
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            self.notify("set $EDITOR (or press e for the in-app editor)", severity="warning")
            return
        content = next(f.content for f in self.review.proposal.files if f.path == path)
        suffix = Path(path).suffix
        with tempfile.TemporaryDirectory(prefix="agent-tui-edit-") as tmp:
            target = Path(tmp) / f"proposal{suffix}"
            target.write_text(content, encoding="utf-8")
            with self.app.suspend():
                subprocess.run([*shlex.split(editor), str(target)], check=False)
            new = target.read_text(encoding="utf-8")
        if new != content:
            self.change("edit_file", path=path, content=new)

    def action_drop_file(self) -> None:
        path = self.query_one(FileList).current_path
        if path is not None:
            self.change("drop_file", path=path)
            self.notify(
                f"dropped {safe(path)} from the proposal · ctrl+z brings it back",
                timeout=5,
                markup=False,
            )

    def action_undo(self) -> None:
        if not self.undo_stack:
            self.notify("nothing to undo", timeout=2)
            return
        if self.busy:
            self.notify("still checking the last change…", severity="warning")
            return
        what, before = self.undo_stack.pop()
        self.change("restore_proposal", proposal=before)
        self.notify(f"undone: {what}", timeout=3, markup=False)

    def action_edit_details(self) -> None:
        def done(changed: dict[str, str] | None) -> None:
            if changed:
                self.change("edit", **changed)

        self.agent_app.open_details(self.review.proposal, done)

    def action_apply_fixes(self) -> None:
        if not self.review.fixable:
            self.notify("nothing to fix automatically", timeout=3)
            return
        self.change("fix")

    def action_recheck(self) -> None:
        self.change("recheck")

    def action_regenerate(self) -> None:
        def done(feedback: str | None) -> None:
            if feedback:
                self.run.discard()  # the new answer replaces this one
                self.agent_app.open_generating(self.run, feedback, replace=True)

        self.agent_app.open_feedback(done)

    def action_toggle_split(self) -> None:
        wide = self.app.size.width >= DiffView.SIDE_BY_SIDE_MIN_WIDTH
        current = wide if self.split is None else self.split
        self.split = not current
        self._show_diff()

    def action_back(self) -> None:
        self.run.discard()  # left without publishing (a published one keeps its outcome)
        self.app.pop_screen()
