"""One repository's working session: the workspace, its model host and its issue source.

Why here and not in the TUI: the Textual app, the CLI and the tests drive the same steps
(issue -> context -> messages -> backend stream -> proposal -> checks, then edits, fixes,
regeneration with feedback), so the steps live in the engine and yield events; the app only
runs them in workers and draws what they say. Nothing here imports textual.

The workspace (this module) holds what a repository's runs share: the configuration, the
loaded models, the issue source and the history store. One issue's run is
``engine.flow.issue_run.IssueRun``; the events it yields and the review it ends with are in
``engine.flow.run_events``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine.core.config import AppConfig
from engine.core.errors import AgentTuiError, PromptProfileError
from engine.core.models import Issue, IssueComment
from engine.flow.issue_run import IssueRun, rebuild_proposal
from engine.generate.backends import get_backend
from engine.generate.backends.base import Backend
from engine.issues.forge.base import IssueSource
from engine.issues.forge.registry import issue_source_for
from engine.publish.store import Store

BackendFactory = Callable[[str, Any], Backend]


class ModelHost:
    """The model backends of one process, loaded lazily and at most once per profile.

    Loading a GGUF takes seconds, so the TUI calls ``load`` from a worker the first time a
    model is needed (or at startup when ``[tui] preload_model`` is set); later calls return
    the same loaded backend at once.

    Args:
        config: the configuration holding the profiles.
        factory: creates a backend for (name, profile); default: the engine's registry.
    """

    def __init__(self, config: AppConfig, factory: BackendFactory = get_backend) -> None:
        self.config = config
        self._factory = factory
        self._lock = threading.Lock()
        self._loaded: dict[str, Backend] = {}
        self.load_seconds: dict[str, float] = {}

    def is_loaded(self, name: str) -> bool:
        """Whether profile ``name`` is ready without waiting."""
        return name in self._loaded

    def load(self, name: str) -> Backend:
        """The backend of profile ``name``, loading its model now if needed (blocking).

        Args:
            name: a model profile name.

        Returns:
            The ready backend.

        Raises:
            UnknownProfileError: no such profile.
            ModelLoadError: the model cannot be loaded.
        """
        profile = self.config.profile(name)
        with self._lock:
            backend = self._loaded.get(name)
            if backend is not None and backend.profile == profile:
                return backend
            started = time.perf_counter()
            backend = self._factory(name, profile)
            load = getattr(backend, "load", None)
            if callable(load):
                load()
            self._loaded[name] = backend
            self.load_seconds[name] = time.perf_counter() - started
            return backend


class Workspace:
    """A repository as agent-tui works on it: config, issue source, models, active profiles.

    Args:
        repo: the repository directory.
        config: its configuration.
        source: the issue source (default: chosen for the repository, see ``issue_source``).
        models: the model host (default: a new one over ``config``).
    """

    def __init__(
        self,
        repo: Path,
        config: AppConfig,
        *,
        source: IssueSource | None = None,
        models: ModelHost | None = None,
    ) -> None:
        self.repo = repo
        self.config = config
        self._source = source
        self.models = models or ModelHost(config)
        self.model_name = config.default_model
        self.prompt_name = config.default_prompt
        self._store: Store | None = None
        self._source_lock = threading.Lock()
        self._prefetch_lock = threading.Lock()
        self._prefetch: Future[tuple[IssueSource, list[Issue]]] | None = None

    def set_model(self, name: str) -> None:
        """Make profile ``name`` the active model.

        Raises:
            UnknownProfileError: no such profile.
        """
        self.config.profile(name)
        self.model_name = name

    def prefetch_issues(self) -> None:
        """Start reading the cached issue list in a background thread (see ``cached_issues``).

        Why: at startup the UI toolkit and the issue source (its imports, the cache read) can
        overlap; the first paint then shows the issues sooner.
        """
        with self._prefetch_lock:
            if self._prefetch is not None:
                return
            future: Future[tuple[IssueSource, list[Issue]]] = Future()
            self._prefetch = future

        def run() -> None:
            try:
                source = self.issue_source()
                future.set_result((source, source.list_issues()))
            except BaseException as exc:  # handed to whoever asks for the list
                future.set_exception(exc)

        threading.Thread(target=run, name="agent-tui-prefetch", daemon=True).start()

    def cached_issues(self) -> tuple[IssueSource, list[Issue]]:
        """The issue source and its cached issues (instant: no network), prefetched once.

        Raises:
            AgentTuiError: the source cannot be chosen or its cache/files cannot be read.
        """
        with self._prefetch_lock:
            future = self._prefetch
            self._prefetch = None
        if future is not None:
            return future.result()
        source = self.issue_source()
        return source, source.list_issues()

    def issue_source(self) -> IssueSource:
        """The issue source of this repository (chosen once, on first use)."""
        with self._source_lock:
            if self._source is None:
                self._source = issue_source_for(self.repo, self.config)
            return self._source

    def store(self) -> Store | None:
        """The history/outbox database of the repository (None outside a git repository)."""
        if self._store is None:
            try:
                self._store = Store.for_repo(self.repo)
            except AgentTuiError:
                return None
        return self._store

    def restore(self, issue: Issue) -> IssueRun | None:
        """A run holding the latest proposal of ``issue`` from the history, with the user's
        edits and fresh checks (None: the history has none).

        Why: a proposal is never lost when the app is closed; reopening it brings back the
        proposal as the user left it, ready to review and publish.

        Raises:
            AgentTuiError: the repository cannot be read for the checks.
        """
        store = self.store()
        if store is None:
            return None
        record = store.latest_by_issue().get(issue.number)
        if record is None or record.current is None:
            return None
        run = IssueRun(self, issue)
        if record.model_profile in self.config.models:
            run.model_name = record.model_profile
        run.prompt_name = record.prompt_profile or run.prompt_name
        try:
            review = run._review(rebuild_proposal(record.current), generation_id=record.id)
        except PromptProfileError:  # a prompt profile since removed: check with the active one
            run.prompt_name = self.prompt_name
            review = run._review(rebuild_proposal(record.current), generation_id=record.id)
        review.outcome = record.outcome
        review.pr_url = record.pr_url
        review.saved_at = record.updated_at
        run.review = review
        return run

    def start(self, issue: Issue, comments: list[IssueComment] | None = None) -> IssueRun:
        """A run for ``issue`` with the active model and prompt profiles.

        Args:
            issue: the issue to solve.
            comments: its comments when already known (else read on demand).

        Returns:
            A new run (nothing is loaded or built yet).
        """
        return IssueRun(self, issue, comments)


__all__ = [
    "ModelHost",
    "Workspace",
]
