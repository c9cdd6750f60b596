"""The Generating screen: the answer streaming in, as numbers, a growing file tree and raw text.

Esc sets the ``threading.Event`` the engine checks every token, so generation stops within
about one token and nothing is written. A truncated, looping or failed answer stays on screen
(the partial proposal is kept) with what to do next.

The numbers line follows ``phase``, ``numbers`` and ``retry_note`` (``var``s with watchers);
``running`` decides which keys work, so setting it refreshes them.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import var
from textual.widgets import Footer, Static

from engine.core.events import (
    Cancelled,
    Finished,
    GenerationFailed,
    HostCrashed,
    Looping,
    PromptProcessed,
    ProposalUpdated,
    TokensGenerated,
    Truncated,
)
from engine.flow.issue_run import IssueRun
from engine.flow.run_events import ContextReady, ModelLoading, ModelReady, RetrySampling, Reviewed
from tui.messages import (
    ContextBuilt,
    GenerationPhased,
    GenerationStopped,
    ModelLoaded,
    ModelLoadStarted,
    ProposalReady,
    ProposalStreamed,
)
from tui.screens.base import AgentScreen
from tui.widgets.status_bar import StatusBar

RAW_TAIL = 6000


def proposal_tree(
    partial: dict[str, Any] | None, *, done: bool = False, stopped: bool = False
) -> Tree:
    """The (partial) proposal as a tree: branch, commit, PR title, then the files so far,
    grouped under their directories as their paths stream in. ``stopped``: generation
    ended before the answer did, so the last file is marked as cut off, not as being
    written."""
    tree = Tree(Text("proposal", style="bold"), guide_style="dim")
    data = partial or {}
    for key, name in (
        ("branch_suffix", "branch"),
        ("commit_message", "commit"),
        ("pr_title", "PR title"),
    ):
        value = data.get(key)
        if isinstance(value, str):
            tree.add(Text.assemble((f"{name}: ", "dim"), (value, "")))
    files = data.get("files")
    if isinstance(files, list):
        node = tree.add(Text(f"files ({len(files)})", style="bold"))
        folders: dict[str, Tree] = {}  # one node per directory, in order of appearance
        for index, item in enumerate(files):
            if not isinstance(item, dict):
                continue
            path = item.get("path")
            content = item.get("content")
            writing = not done and index == len(files) - 1
            parent = node
            name = "…"
            if isinstance(path, str):
                folder, _sep, name = path.rpartition("/")
                if folder:
                    if folder not in folders:
                        folders[folder] = node.add(Text(f"{folder}/", style="bold"))
                    parent = folders[folder]
            entry = Text(name or "…")
            if isinstance(content, str):
                lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)
                entry.append(f"  {lines} lines", style="dim")
            if writing and stopped:
                entry.append("  cut off", style="italic yellow")
            elif writing:
                entry.append("  writing…", style="italic")
            parent.add(entry)
    elif not data:
        tree.add(Text("waiting for the first token…", style="dim italic"))
    return tree


def _failure_text(failure: GenerationFailed, other_models: int = 0) -> RenderableType:
    if isinstance(failure, Cancelled):
        title = "Cancelled. Nothing was written."
        todo = "r: generate again · esc: back to the issue"
    elif isinstance(failure, Truncated):
        title = f"Truncated: {failure.message}"
        todo = (
            "r: try again with a new seed · esc: back (raise max_tokens / n_ctx in the model "
            "profile)"
        )
    elif isinstance(failure, Looping):
        title = f"Stopped, the model was looping: {failure.message}"
        todo = "r: try again with a new seed and a small temperature"
        if other_models:
            todo += f" · M: switch model profile ({other_models} other configured)"
        todo += " · esc: back (a larger model helps most; dry_multiplier in the profile too)"
    else:
        title = f"Generation failed ({failure.kind}): {failure.message}"
        todo = "r: try again · esc: back"
    parts: list[RenderableType] = [Text(title, style="bold")]
    if failure.hint:
        parts.append(Text(f"What to do: {failure.hint}"))
    parts.append(Text(todo, style="dim"))
    if failure.partial and not isinstance(failure, Cancelled):
        parts.append(Text("The partial proposal is kept above.", style="dim"))
    return Group(*parts)


class GeneratingScreen(AgentScreen):
    """Watch a proposal stream in; cancel with Esc."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("escape", "back", "Back", id="back_generating"),
        Binding("w", "toggle_raw", "Raw stream", id="toggle_raw"),
        Binding("r", "retry", "Retry", id="retry"),
    ]

    running: var[bool] = var(False, bindings=True, init=False)
    """Generating now: Esc cancels; else Esc goes back and r retries."""
    phase: var[str] = var("starting", init=False)
    """What generation is doing (loading the model, building context, generating...)."""
    numbers: var[ProposalStreamed | None] = var(None, always_update=True, init=False)
    """The latest token numbers (prompt, first token, speed, count, time)."""
    retry_note: var[str] = var("", init=False)
    """Said while a retry runs: its new seed and temperature."""

    def __init__(self, run: IssueRun, feedback: str | None = None, *, start: bool = True):
        super().__init__()
        self.run = run
        self.feedback = feedback
        self.start = start
        self.cancel_event = threading.Event()
        self.failure: GenerationFailed | None = None
        self.partial: dict[str, Any] | None = None
        self.raw = ""
        self._started = 0.0
        self._ticker: Any = None

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("", id="gen-stats")
        with Horizontal(id="gen-main"):
            with VerticalScroll(id="gen-tree-box"):
                yield Static(proposal_tree(None), id="gen-tree")
            with VerticalScroll(id="gen-raw-box"):
                yield Static("", id="gen-raw", markup=False)
        yield Static("", id="gen-outcome")
        yield Footer()

    def on_mount(self) -> None:
        title = f"agent-tui · #{self.run.issue.number} {self.run.issue.title}"
        what = "regenerating with feedback" if self.feedback else "generating"
        self.query_one(StatusBar).set_left(f"{title} · {what}")
        self.agent_app.refresh_badges()
        self.query_one("#gen-raw-box").display = False
        self.query_one("#gen-outcome").display = False
        self._render_stats()
        if self.start:
            self.begin()

    # -- running ---------------------------------------------------------------------------
    def begin(self) -> None:
        """Start (or restart) generation in a worker."""
        self.cancel_event = threading.Event()
        self.failure = None
        self.partial = None
        self.raw = ""
        self.numbers = None
        self.retry_note = ""
        self._started = time.perf_counter()
        self.running = True
        self.phase = "starting"
        self.query_one("#gen-outcome").display = False
        self.query_one("#gen-tree", Static).update(proposal_tree(None))
        if self._ticker is None:
            self._ticker = self.set_interval(0.5, self._render_stats)  # the elapsed time
        self.generate()

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def generate(self) -> None:
        """Run the engine's generation and post what happens."""
        run = self.run
        raw: list[str] = []
        partial: dict[str, Any] | None = None
        prompt_tokens = cached = tokens = 0
        speed = elapsed = 0.0
        started = time.perf_counter()
        first: float | None = None
        for event in run.generate(self.cancel_event, self.feedback):
            if isinstance(event, ModelLoading):
                self.app.post_message(ModelLoadStarted(event.name))
                self.post_message(GenerationPhased(f"loading model {event.name}"))
            elif isinstance(event, ModelReady):
                self.app.post_message(ModelLoaded(event.name, event.seconds))
                self.post_message(GenerationPhased("building context"))
            elif isinstance(event, RetrySampling):
                self.app.call_from_thread(setattr, self, "retry_note", event.describe())
            elif isinstance(event, ContextReady):
                self.post_message(ContextBuilt(run.issue.number, event.context))
                started = time.perf_counter()
            elif isinstance(event, PromptProcessed):
                prompt_tokens, cached = event.prompt_tokens, event.cached_prompt_tokens
                self.post_message(GenerationPhased("generating"))
            elif isinstance(event, TokensGenerated):
                if first is None:
                    first = time.perf_counter() - started
                event.add_to(raw)
                tokens, speed, elapsed = (
                    event.completion_tokens,
                    event.tokens_per_s,
                    event.elapsed_s,
                )
                self.post_message(
                    ProposalStreamed(
                        partial, "".join(raw), tokens, speed, elapsed, first, prompt_tokens, cached
                    )
                )
            elif isinstance(event, ProposalUpdated):
                partial = event.partial
                self.post_message(
                    ProposalStreamed(
                        partial, "".join(raw), tokens, speed, elapsed, first, prompt_tokens, cached
                    )
                )
            elif isinstance(event, Finished):
                self.post_message(GenerationPhased("checking"))
            elif isinstance(event, Reviewed):
                self.post_message(ProposalReady(event.review))
            elif isinstance(event, GenerationFailed):
                self.post_message(GenerationStopped(event))

    # -- messages --------------------------------------------------------------------------
    def on_generation_phased(self, message: GenerationPhased) -> None:
        self.phase = message.phase
        app = self.agent_app
        if message.phase == "generating" and app.model_state != "loaded":
            app.model_state = "loaded"  # it answers: it is loaded
            app.refresh_badges()

    def on_context_built(self, message: ContextBuilt) -> None:
        context = message.context
        self.phase = f"processing the prompt ({context.total_tokens:,} tokens)"

    def on_proposal_streamed(self, message: ProposalStreamed) -> None:
        if message.partial is not None:
            self.partial = message.partial
            self.query_one("#gen-tree", Static).update(proposal_tree(self.partial))
        self.raw = message.raw
        if self.query_one("#gen-raw-box").display:
            self.query_one("#gen-raw", Static).update(self.raw[-RAW_TAIL:])
        if message.completion_tokens:
            self.phase = "generating"
        self.numbers = message

    def on_proposal_ready(self, message: ProposalReady) -> None:
        self.running = False
        self._stop_ticker()
        self.agent_app.open_preview(self.run, replace=True)

    def on_generation_stopped(self, message: GenerationStopped) -> None:
        self.show_failure(message.failure)

    def show_failure(self, failure: GenerationFailed) -> None:
        """Show why generation stopped, keeping the partial proposal on screen."""
        self.running = False
        self._stop_ticker()
        self.failure = failure
        self.phase = f"stopped: {failure.kind}"
        if isinstance(failure, HostCrashed):
            self.agent_app.model_crashed()
        if failure.partial is not None:
            self.partial = failure.partial
        self.query_one("#gen-tree", Static).update(proposal_tree(self.partial, stopped=True))
        if failure.raw:
            self.raw = failure.raw
            self.query_one("#gen-raw", Static).update(self.raw[-RAW_TAIL:])
        outcome = self.query_one("#gen-outcome", Static)
        others = len(self.run.workspace.config.models) - 1
        outcome.update(Group(_failure_text(failure, others), *self._better_models(failure)))
        outcome.display = True
        outcome.set_class(not isinstance(failure, Cancelled), "error")

    def _better_models(self, failure: GenerationFailed) -> list[Text]:
        """After a failed answer of the embedded model: the models found on this machine,
        by name (the Models screen uses one with Enter)."""
        if isinstance(failure, Cancelled):
            return []
        profile = self.run.workspace.config.models.get(self.run.model_name)
        found = self.agent_app.discovered or []
        if getattr(profile, "model_package", None) is None or not found:
            return []
        names = ", ".join(d.name for d in found[:3]) + (" …" if len(found) > 3 else "")
        return [
            Text(
                f"A larger model is on this machine: {names}. M opens Models; Enter uses one.",
                style="bold",
            )
        ]

    def on_worker_error(self, worker: Any) -> None:
        if worker.group == "generate":
            # the error modal says why; here generation just stops
            self.running = False
            self._stop_ticker()
            self.phase = "failed"

    # -- display ---------------------------------------------------------------------------
    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def watch_phase(self) -> None:
        self._render_stats()

    def watch_numbers(self) -> None:
        self._render_stats()

    def watch_retry_note(self) -> None:
        self._render_stats()

    def _render_stats(self) -> None:
        n = self.numbers
        parts = [f"{self.run.model_name} · {self.run.prompt_name}", self.phase]
        if self.retry_note:
            parts.append(self.retry_note)
        if n is not None:
            if n.prompt_tokens:
                cached = f", {n.cached_prompt_tokens:,} cached" if n.cached_prompt_tokens else ""
                parts.append(f"prompt {n.prompt_tokens:,} tok{cached}")
            if n.ttft_s is not None:
                parts.append(f"first token {n.ttft_s:.1f} s")
            parts.append(f"{n.tokens_per_s:.1f} tok/s")
            parts.append(f"{n.completion_tokens:,} tokens")
            parts.append(f"{n.elapsed_s:.1f} s")
        elif self.running and self._started:
            parts.append(f"elapsed {time.perf_counter() - self._started:.1f} s")
        self.query_one("#gen-stats", Static).update(Text(" · ".join(parts), no_wrap=False))

    # -- actions ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.running
        if action == "back_generating" or action == "back":
            return not self.running
        if action == "retry":
            return not self.running
        return True

    def action_cancel(self) -> None:
        if self.running:
            self.cancel_event.set()
            self.phase = "cancelling…"

    def action_back(self) -> None:
        if not self.running:
            self.app.pop_screen()

    def action_retry(self) -> None:
        if not self.running:
            self.begin()

    def action_toggle_raw(self) -> None:
        box = self.query_one("#gen-raw-box")
        box.display = not box.display
        if box.display:
            self.query_one("#gen-raw", Static).update(self.raw[-RAW_TAIL:])

    def on_unmount(self) -> None:
        # leaving the screen (app quit) stops the engine too
        self.cancel_event.set()
