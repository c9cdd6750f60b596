"""GitHub through ghapi: issues (cached for offline use) and the pull-request side of publishing.

Why ghapi with ``sync=True``: ghapi 2.x is async by default; the engine's callers (TUI worker
threads, the CLI) are synchronous, so the client is built blocking. Its base URL comes from
``[github] api_url`` (GitHub Enterprise: ``https://HOST/api/v3``), and owner/repo come from
the remote's URL (https, ssh and scp-like forms) unless ``[github] repo`` names them.

Errors keep GitHub's own words: every HTTP failure becomes a :class:`GitHubError` whose
message quotes GitHub's ``message`` (and the ``errors`` of a 422) with the status, plus when
to retry when a rate limit stopped it (``Retry-After`` for a secondary limit, else the primary
limit's reset; a 429 is always a rate limit). Only a request that never got an answer (a
transport error) is ``network``: the issue list then falls back to the cache, and publishing
queues its job in the outbox. Any other failure inside the client, or a success answer of the
wrong shape (a captive portal's HTML page where a list was expected), is an error shown as is:
the cache is kept, nothing is queued.

The token (which variable, which host it may go to) is ``engine.issues.forge.github_token``;
the issue list's side (the cached issue source) is ``engine.issues.forge.github_source``.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.core.errors import GitHubError

if TYPE_CHECKING:
    from engine.issues.forge.github_token import Token

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
PER_PAGE = 100
#: stop following ``Link: rel="next"`` after this many pages (100 x 100 = 10,000 items)
MAX_PAGES = 100

_SCP_RE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")


# ----------------------------------------------------------------------------------------------
# where: owner/repo and the API URL


@dataclass(frozen=True)
class GitHubRepo:
    """One repository on a GitHub (github.com or an Enterprise server)."""

    owner: str
    name: str
    api_url: str = DEFAULT_API_URL
    """The REST API base, e.g. ``https://api.github.com`` or ``https://HOST/api/v3``."""

    @property
    def full_name(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    @property
    def key(self) -> str:
        """A stable identity for caches: the API host and ``owner/name``."""
        host = urlsplit(self.api_url).netloc or self.api_url
        return f"{host}/{self.full_name}"


def parse_remote_url(url: str) -> tuple[str, str, str] | None:
    """``(host, owner, repo)`` from a git remote URL, or None when it names no owner/repo.

    Handles ``https://[user@]host[:port]/owner/repo(.git)``, ``ssh://git@host[:port]/owner/repo``,
    ``git://host/owner/repo`` and the scp-like ``git@host:owner/repo.git``. Local paths and
    ``file://`` URLs give None.

    Args:
        url: a remote URL as configured.

    Returns:
        The host (with a non-default port), the owner and the repository name.
    """
    url = url.strip()
    if not url:
        return None
    host: str | None
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh", "ssh+git"):
            return None
        host = parts.hostname
        if host and parts.port and parts.scheme in ("http", "https"):
            host = f"{host}:{parts.port}"
        path = parts.path
    else:
        match = _SCP_RE.match(url)
        if not match or url.startswith(("/", ".", "~")):
            return None
        host, path = match["host"], match["path"]
    if not host:
        return None
    segments = [s for s in path.strip("/").split("/") if s]
    if len(segments) < 2:
        return None
    owner, repo = segments[-2], segments[-1]
    if repo.endswith(".git"):
        repo = repo[:-4]
    if not owner or not repo:
        return None
    return host.lower(), owner, repo


def api_url_for_host(host: str) -> str:
    """The REST API base of a GitHub web host (``github.com`` or an Enterprise server)."""
    if host in ("github.com", "www.github.com"):
        return DEFAULT_API_URL
    return f"https://{host}/api/v3"


def api_host(api_url: str) -> str:
    """The host (and port) an API URL points at; ``api.github.com`` means ``github.com``."""
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if parts.port:
        host = f"{host}:{parts.port}"
    return "github.com" if host == "api.github.com" else host


def resolve_repo(
    remote_url: str | None, *, api_url: str = DEFAULT_API_URL, repo: str | None = None
) -> GitHubRepo | None:
    """The GitHub repository a remote points at, or None when it is not on a GitHub.

    A remote is on GitHub when its host is ``github.com`` or the host of the configured
    ``api_url`` (GitHub Enterprise, or a test server). ``repo`` (``owner/name``) overrides
    the remote entirely.

    Args:
        remote_url: the remote's URL as configured (None: no such remote).
        api_url: ``[github] api_url``.
        repo: ``[github] repo``.
    """
    if repo:
        owner, _, name = repo.partition("/")
        return GitHubRepo(owner, name, api_url)
    if not remote_url:
        return None
    parsed = parse_remote_url(remote_url)
    if parsed is None:
        return None
    host, owner, name = parsed
    bare_host = host.split(":")[0]
    configured = api_host(api_url)
    if api_url.rstrip("/") != DEFAULT_API_URL and host in (configured, configured.split(":")[0]):
        return GitHubRepo(owner, name, api_url.rstrip("/"))
    if bare_host == "github.com" and api_url.rstrip("/") == DEFAULT_API_URL:
        return GitHubRepo(owner, name, DEFAULT_API_URL)
    return None


# ----------------------------------------------------------------------------------------------
# errors


def _plain(value: Any) -> Any:
    """ghapi's AttrDict/L objects as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value


def github_message(body: Any) -> str:
    """GitHub's own words from an error body: ``message`` plus each of its ``errors``."""
    if not isinstance(body, dict):
        return str(body or "").strip()[:500]
    text = str(body.get("message") or "").strip()
    details = []
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            msg = err.get("message")
            if not msg:
                bits = [str(err.get(k)) for k in ("resource", "field", "code") if err.get(k)]
                msg = " ".join(bits)
            if msg:
                details.append(str(msg))
        elif err:
            details.append(str(err))
    if details:
        text = f"{text}: {'; '.join(details)}" if text else "; ".join(details)
    return text or "(no message)"


def _reset_time(headers: Any) -> str:
    try:
        stamp = int(headers.get("x-ratelimit-reset"))
    except (TypeError, ValueError):
        return ""
    return datetime.fromtimestamp(stamp, tz=UTC).astimezone().strftime("%H:%M:%S")


def retry_after_seconds(headers: Any, *, now: datetime | None = None) -> float | None:
    """Seconds GitHub's ``Retry-After`` header asks to wait (delta seconds or an HTTP date).

    Why: a secondary rate limit (too many requests at once, or too many pull requests
    created) answers 403 or 429 with ``Retry-After``; ``X-RateLimit-Reset`` then names the
    primary limit's reset, which is not when the request may be retried.
    """
    value = str(headers.get("retry-after") or "").strip() if headers else ""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


#: exception class names of a request that never got an answer (httpx/httpx2 transport
#: errors, ghapi's APIError wrapping one, the standard library's socket errors)
_NETWORK_ERRORS = frozenset(
    {
        "TransportError",
        "TimeoutException",
        "NetworkError",
        "ProtocolError",
        "ProxyError",
        "UnsupportedProtocol",
        "URLError",
    }
)


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) means the request never got an answer from GitHub."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError):  # ConnectionError, socket.timeout, ssl errors
            return True
        if any(cls.__name__ in _NETWORK_ERRORS for cls in type(item).__mro__):
            return True
        todo += [getattr(item, "raw", None), item.__cause__, item.__context__]
    return False


#: the title and hint of GitHub's plain refusals, by HTTP status (rate limits are apart)
_REFUSALS: dict[int, tuple[str, str]] = {
    401: (
        "GitHub authentication failed",
        "check the token in GH_TOKEN/GITHUB_TOKEN, or run `gh auth login`",
    ),
    404: ("Not found on GitHub", "check [github] repo / the remote URL"),
    403: (
        "GitHub refused the request",
        "the token may lack a scope (repo / pull_requests: write)",
    ),
    422: ("GitHub rejected the request", ""),
}


def error_from_api(exc: Exception, what: str, *, api_url: str, anonymous: bool) -> GitHubError:
    """A :class:`GitHubError` from a ghapi/fasttransport exception, in GitHub's words.

    Args:
        exc: the exception ghapi raised (``APIError`` or an httpx error).
        what: what we were doing ("listing issues of o/r").
        api_url: the API base (named in network errors).
        anonymous: no token was sent (rate-limit and 404 hints differ).
    """
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if status is None:
        return _no_answer(exc, what, api_url)
    body: Any = getattr(exc, "raw", None)
    if body is None and response is not None:
        try:
            body = response.json()
        except Exception:
            body = getattr(response, "text", "")
    gh_msg = github_message(_plain(body))
    headers = getattr(response, "headers", None) or {}
    text = f"GitHub answered {status} while {what}: {gh_msg}"
    remaining = headers.get("x-ratelimit-remaining") if headers else None
    wait = retry_after_seconds(headers) if status in (403, 429) else None
    if status == 429 or (
        status == 403 and (wait is not None or remaining == "0" or "rate limit" in gh_msg.lower())
    ):
        return _rate_limited(text, status, gh_msg, headers, wait, anonymous)
    if status not in _REFUSALS:
        return GitHubError(text, status=status, github_message=gh_msg)
    title, hint = _REFUSALS[status]
    if status == 404 and anonymous:
        hint += "; a private repository needs a token (GH_TOKEN or `gh auth login`)"
    return GitHubError(text, title=title, hint=hint, status=status, github_message=gh_msg)


def _no_answer(exc: Exception, what: str, api_url: str) -> GitHubError:
    """The error for a request GitHub never answered: the network, or a bug of a client."""
    detail = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    if not is_network_error(exc):
        # not a network failure: a bug (ours or the client library's) to show, never a
        # reason to serve the cache as "offline" or to queue a publish for later
        return GitHubError(
            f"the GitHub client failed while {what}: {type(exc).__name__}: {detail[:300]}",
            title="GitHub client error",
            hint="this is a bug in agent-tui or ghapi, not a network problem: please "
            "report it with `agent-tui --version`",
            network=False,
        )
    return GitHubError(
        f"cannot reach GitHub at {api_url} while {what}: {detail}",
        title="GitHub unreachable",
        hint="check the network (or [github] api_url); cached data is used meanwhile",
    )


def _rate_limited(
    text: str, status: int, gh_msg: str, headers: Any, wait: float | None, anonymous: bool
) -> GitHubError:
    """GitHub's rate limit, with when to retry (``Retry-After``, else the limit's reset)."""
    if wait is not None:
        # a secondary rate limit: Retry-After says when, X-RateLimit-Reset does not apply
        when = (datetime.now(UTC) + timedelta(seconds=wait)).astimezone()
        text += f" (GitHub asks to retry after {wait:.0f} s, at {when:%H:%M:%S})"
        hint = f"wait {wait:.0f} s before retrying; cached issues are served meanwhile"
    else:
        reset = _reset_time(headers)
        if reset:
            text += f" (the limit resets at {reset})"
        hint = (
            "set GH_TOKEN (or run `gh auth login`) for 5,000 requests/hour"
            if anonymous
            else "wait for the reset; cached issues are served meanwhile"
        )
    return GitHubError(
        text,
        title="GitHub rate limit",
        hint=hint,
        status=status,
        github_message=gh_msg,
        retry_after=wait,
        rate_limited=True,
    )


# ----------------------------------------------------------------------------------------------
# the client


def _next_link(header: str) -> bool:
    """Whether a ``Link`` header has a ``rel="next"`` entry."""
    return any('rel="next"' in part for part in header.split(","))


@functools.lru_cache(maxsize=16)
def _ghapi(api_url: str, owner: str, name: str, token: str | None) -> tuple[Any, threading.Lock]:
    """One ghapi client per repository and token per process.

    Why: ghapi builds its whole API surface (about a thousand operations) at construction,
    which costs about a second; the TUI and a publish make many calls.
    """
    # Imported late (ghapi loads GitHub's API description), and from ghapi.core: ghapi.all
    # also imports ghapi.actions, which writes CONTEXT_GITHUB, CONTEXT_NEEDS and
    # GITHUB_REPOSITORY=octocat/Hello-World into os.environ, and so into every git process
    # and test command started afterwards.
    from ghapi.core import GhApi

    api = GhApi(
        owner=owner,
        repo=name,
        token=token,
        gh_host=api_url,
        authenticate=token is not None,
        sync=True,
    )
    api.headers["X-GitHub-Api-Version"] = "2022-11-28"
    return api, threading.Lock()


class GitHubClient:
    """The few GitHub REST calls agent-tui makes, through ghapi, with errors in GitHub's words.

    Args:
        repo: the repository.
        token: the token (None: anonymous).
        timeout: seconds per request.
        retries: connection retries ghapi makes before a network failure is reported.
    """

    def __init__(
        self,
        repo: GitHubRepo,
        token: Token | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 1,
    ) -> None:
        self.repo = repo
        self.token = token
        self.api, self._lock = _ghapi(
            repo.api_url.rstrip("/"), repo.owner, repo.name, token.value if token else None
        )
        self.api.transport.timeout = timeout
        self.api.transport.retries = retries

    @property
    def anonymous(self) -> bool:
        """No token is sent."""
        return self.token is None

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return _plain(fn(*args, **kwargs))
        except Exception as exc:  # ghapi raises APIError, httpx errors, or worse
            if isinstance(exc, GitHubError):
                raise
            raise error_from_api(
                exc, what, api_url=self.repo.api_url, anonymous=self.anonymous
            ) from None

    def _unexpected(self, what: str, expected: str, value: Any, content_type: str) -> GitHubError:
        """The error for a success answer of the wrong shape (an HTML page, a bare string).

        Why: a captive portal or an SSO proxy answers 200 with its login page; taken as
        "no items" it would empty the issue cache, taken as a network failure it would queue
        a publish that can never succeed until the user logs in.
        """
        sample = " ".join(str(value if value is not None else "nothing").split())[:120]
        kind = type(value).__name__ if not isinstance(value, str) else "text"
        return GitHubError(
            f"{self.repo.api_url} answered {what} with {kind} ({content_type or 'no type'}), "
            f"not {expected}: {sample!r}",
            title="Unexpected answer from GitHub",
            hint=f"a captive portal or a proxy's login page? Open {self.repo.api_url} in a "
            "browser (or check [github] api_url); the cached issues are kept",
            network=False,
        )

    def _content_type(self) -> str:
        return str(self.api.recv_hdrs.get("content-type", "") or "").split(";")[0]

    def _object(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One JSON object from GitHub (an error when the answer is anything else)."""
        with self._lock:
            result = self._call(what, fn, *args, **kwargs)
            content_type = self._content_type()
        if not isinstance(result, dict):
            raise self._unexpected(what, "a JSON object", result, content_type)
        return result

    def _pages(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following ``Link: rel="next"`` page by page.

        Raises:
            GitHubError: GitHub failed, or answered with something that is not a JSON list.
        """
        for page in range(1, MAX_PAGES + 1):
            with self._lock:  # the response headers live on the shared transport
                items = self._call(what, fn, per_page=PER_PAGE, page=page, **kwargs)
                link = str(self.api.recv_hdrs.get("link", "") or "")
                content_type = self._content_type()
            if not isinstance(items, list):
                raise self._unexpected(what, "a JSON list", items, content_type)
            yield from (i for i in items if isinstance(i, dict))
            if not items or not _next_link(link):
                return

    def iter_issues(
        self, *, state: str = "open", since: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Issue JSON objects (pull requests included, as GitHub sends them), all pages.

        Args:
            state: ``open``, ``closed`` or ``all``.
            since: only items updated at or after this ISO 8601 time.
        """
        kwargs: dict[str, Any] = {"state": state, "sort": "updated", "direction": "desc"}
        if since:
            kwargs["since"] = since
        yield from self._pages(
            f"listing issues of {self.repo.full_name}", self.api.issues.list_for_repo, **kwargs
        )

    def issue(self, number: int) -> dict[str, Any]:
        """Issue ``number``'s JSON."""
        result: dict[str, Any] = self._object(
            f"reading issue #{number} of {self.repo.full_name}", self.api.issues.get, number
        )
        return result

    def comments(self, number: int) -> list[dict[str, Any]]:
        """Every comment of issue ``number`` (all pages)."""
        return list(
            self._pages(
                f"reading the comments of #{number}",
                self.api.issues.list_comments,
                issue_number=number,
            )
        )

    def repository(self) -> dict[str, Any]:
        """The repository's JSON (``default_branch``, ``permissions``...)."""
        result: dict[str, Any] = self._object(
            f"reading repository {self.repo.full_name}", self.api.repos.get
        )
        return result

    def default_branch(self) -> str:
        """The repository's default branch."""
        return str(self.repository().get("default_branch") or "main")

    def open_pulls_for_head(
        self, head_owner: str, branch: str, *, head_repo: str | None = None
    ) -> list[dict[str, Any]]:
        """Open pull requests whose head is ``head_owner:branch``.

        Args:
            head_owner: the owner of the repository the branch was pushed to.
            branch: the branch.
            head_repo: ``owner/name`` of that repository when it is not this one (a fork
                owned by the same organisation: ``head_owner:branch`` alone is ambiguous).
        """
        pulls = list(
            self._pages(
                f"looking for an open pull request from {branch}",
                self.api.pulls.list,
                head=f"{head_owner}:{branch}",
                state="open",
            )
        )
        if head_repo:
            pulls = [
                p
                for p in pulls
                if str(((p.get("head") or {}).get("repo") or {}).get("full_name", "")).lower()
                == head_repo.lower()
            ]
        return pulls

    def create_pull(
        self,
        *,
        title: str,
        body: str,
        base: str,
        head: str,
        draft: bool,
        head_repo: str | None = None,
    ) -> dict[str, Any]:
        """Open a pull request.

        Args:
            title: its title.
            body: its body (Markdown).
            base: the branch to merge into.
            head: ``branch``, or ``owner:branch`` from a fork of another owner.
            draft: open it as a draft.
            head_repo: ``owner/name`` of a fork owned by this repository's owner (GitHub
                requires it then: ``head`` alone would name a branch of this repository).
        """
        fields: dict[str, Any] = {
            "head": head,
            "base": base,
            "title": title,
            "body": body,
            "draft": draft,
        }
        if head_repo:
            fields["head_repo"] = head_repo
        result: dict[str, Any] = self._object(
            f"opening a pull request from {head} into {base}", self.api.pulls.create, **fields
        )
        return result

    def add_labels(self, number: int, labels: list[str]) -> list[str]:
        """Add ``labels`` to issue or pull request ``number``; returns its labels after."""
        what = f"labelling #{number}"
        with self._lock:
            result = self._call(what, self.api.issues.add_labels, number, labels=labels)
            content_type = self._content_type()
        if not isinstance(result, list):
            raise self._unexpected(what, "a JSON list", result, content_type)
        return [str(lab.get("name")) for lab in result if isinstance(lab, dict)]
