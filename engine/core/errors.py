"""One hierarchy of typed errors, each with a title and a hint.

Why: a user must never see a traceback for an expected failure. The CLI prints
``title: message`` plus the hint, the TUI shows the same three parts in one error modal.
"""

from __future__ import annotations

from engine.core.redact import redact


class AgentTuiError(Exception):
    """Base of every expected failure.

    Attributes:
        title: a short headline ("Configuration error").
        message: what went wrong, in words a person understands.
        hint: what to do about it (may be empty).
    """

    title = "agent-tui error"

    def __init__(self, message: str, *, hint: str = "", title: str | None = None) -> None:
        message, hint = redact(message), redact(hint)  # server errors may echo a credential
        super().__init__(message)
        self.message = message
        self.hint = hint
        if title is not None:
            self.title = title

    def render(self) -> str:
        """The error as plain text for a terminal or a log."""
        text = f"{self.title}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(AgentTuiError):
    """A configuration file or profile is invalid."""

    title = "Configuration error"


class UnknownProfileError(ConfigError):
    """A model or prompt profile name is not defined."""

    title = "Unknown profile"


class ModelLoadError(AgentTuiError):
    """A model could not be located or loaded."""

    title = "Model could not be loaded"


class BackendError(AgentTuiError):
    """A model backend failed (server down, model missing, bad answer)."""

    title = "Model backend error"


class ModelHostCrashed(BackendError):
    """The model host (the child process running llama.cpp) died: a signal, an abort, an exit.

    Attributes:
        signal: the signal's name (``SIGSEGV``), empty when it exited with a code.
        exit_code: the exit status, None when a signal ended it.
        log_tail: the last lines llama.cpp wrote to its log before the end.
    """

    title = "The model crashed"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        title: str | None = None,
        signal: str = "",
        exit_code: int | None = None,
        log_tail: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, hint=hint, title=title)
        self.signal = signal
        self.exit_code = exit_code
        self.log_tail = log_tail


class RepoError(AgentTuiError):
    """The repository is not usable (not a git repo, bad remote...)."""

    title = "Repository error"


class GitHubError(AgentTuiError):
    """GitHub answered with an error; ``message`` carries GitHub's own words.

    Attributes:
        status: the HTTP status (None: no answer from GitHub).
        github_message: GitHub's ``message`` (and its ``errors``), verbatim.
        retry_after: seconds GitHub's ``Retry-After`` asked us to wait (a secondary rate
            limit: calling earlier prolongs it); None when it did not say.
        rate_limited: GitHub's primary or secondary rate limit stopped the request.
    """

    title = "GitHub error"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        title: str | None = None,
        status: int | None = None,
        github_message: str = "",
        network: bool | None = None,
        retry_after: float | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message, hint=hint, title=title)
        self.status = status
        self.github_message = redact(github_message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited
        self._network = status is None if network is None else network

    @property
    def network(self) -> bool:
        """GitHub was not reached at all (a network failure): worth retrying later.

        A failure inside the client that is not a network error has no status either, but is
        a bug to show, not something to retry (``network=False``).
        """
        return self._network


class PublishError(AgentTuiError):
    """A proposal could not be published (refused, or a step failed)."""

    title = "Publish failed"


class PromptProfileError(ConfigError):
    """A prompt profile (Markdown with YAML front matter) is missing or invalid."""

    title = "Prompt profile error"


class IssueFileError(AgentTuiError):
    """A local issue file (``.agent-tui/issues/*.md``) is invalid."""

    title = "Invalid issue file"


class IssueNotFoundError(AgentTuiError):
    """An issue number names no issue of the source."""

    title = "Issue not found"


class ContextTooLargeError(AgentTuiError):
    """The parts of the prompt that cannot be dropped do not fit in the model's context."""

    title = "Prompt does not fit"


class InvalidProposalError(AgentTuiError):
    """A proposal file or object is not a change proposal (bad JSON, wrong shape)."""

    title = "Invalid proposal"


class UnsafePathError(AgentTuiError):
    """A proposal path would write outside the repository or somewhere it must not."""

    title = "Unsafe path"
