"""A fake GitHub at the wire: the REST endpoints agent-tui uses, plus git smart HTTP.

Why: tests must exercise the real ghapi client and real ``git push`` without the internet.
``FakeGitHub`` is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 that speaks like a GitHub
Enterprise server:

* REST under ``/api/v3`` (so ``[github] api_url = fake.api_url``): the repository
  (``default_branch``), issues (pull requests included, as GitHub does) with ``state``,
  ``since``, ``labels``, ``sort``/``direction`` and ``Link`` pagination, one issue, its
  comments (paginated), pulls create/list (``head``/``base``/``state``) with GitHub's
  validation (head must exist, no duplicate open PR for a head, "No commits between"), and
  labels. Bodies are real GitHub JSON shapes; every answer carries rate-limit headers.
* git smart HTTP at ``/<owner>/<repo>.git`` through ``git http-backend`` (bare repositories
  under ``git_root``), so a push is a real push; it requires the token for receive-pack.
* Failure injection: ``fail(status, ...)`` answers the next matching request(s) with 401, 403,
  404, 422 (GitHub's JSON error shape); ``rate_limit()`` answers 403 with
  ``X-RateLimit-Remaining: 0``; ``secondary_rate_limit()`` answers 403 or 429 with
  ``Retry-After``; ``answer_html()`` answers 200 with a login page (a captive portal, an SSO
  proxy). ``stop()``/``start()`` cut and restore the network on the same port.
* What real repositories do: ``drafts_supported = False`` refuses draft pull requests (422,
  as GitHub does for private repositories on free plans); ``add_fork(name)`` creates a fork
  owned by the same owner whose branches need ``head_repo`` in a pull request.
* ``requests`` records every request (method, path, query, headers, JSON body) and the fake's
  answer (status and body). Answers follow GitHub's OpenAPI schemas
  (``tests/test_github_openapi.py`` checks them).

Use the ``github_fake`` fixture (registered in ``conftest.py``), then ``connect_repo(repo)``
to give a temp repository a bare remote on the fake and ``write_config(path)`` for the
``[github]`` section pointing at it. The fake's token is ``FAKE_TOKEN``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

FAKE_TOKEN = "ghp_FakeToken0123456789abcdefABCDEF0123"
API_PREFIX = "/api/v3"
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_DOCS = "https://docs.github.com/rest"


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    """Path without the API prefix (``/repos/acme/widgets/issues``) or the git path."""
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    kind: str
    """``api`` or ``git``."""
    status: int = 0
    """The status the fake answered (0 until it has)."""
    response: Any = None
    """The JSON body the fake answered (``RawBody`` for a non-JSON one)."""

    @property
    def authenticated(self) -> bool:
        """An Authorization header was sent."""
        return "authorization" in self.headers


@dataclass
class _Failure:
    status: int
    method: str | None
    path: re.Pattern[str] | None
    body: Any
    headers: dict[str, str]
    times: int


@dataclass(frozen=True)
class RawBody:
    """An answer body sent as is (not JSON), with its content type."""

    payload: bytes
    content_type: str


@dataclass
class FakeGitHub:
    """A loopback GitHub (REST + git smart HTTP). See the module docstring."""

    owner: str = "acme"
    repo: str = "widgets"
    git_root: Path | None = None
    token: str | None = FAKE_TOKEN
    """The token the fake accepts (None: accept any or none)."""
    public: bool = True
    """Anonymous reads allowed (a private repo answers 404 to anonymous requests)."""
    default_branch: str = "main"
    login: str = "octocat"
    requests: list[RecordedRequest] = field(default_factory=list)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Issues AND pull requests by number (GitHub shares the sequence)."""
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    drafts_supported: bool = True
    """False: creating a draft pull request answers 422 "Draft pull requests are not supported
    in this repository." (private repositories on GitHub Free)."""
    forks: list[str] = field(default_factory=list)
    """Names of forks owned by ``owner`` (``add_fork``); their branches can be a PR's head."""
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._failures: list[_Failure] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tick = 0
        self._next_id = 1

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        """Listen on 127.0.0.1 (the same port as before after a ``stop``)."""
        handler = type("Handler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: every request now fails to connect (a network cut)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The REST base, for ``[github] api_url``."""
        return self.url + API_PREFIX

    @property
    def git_url(self) -> str:
        """The repository's clone/push URL."""
        return f"{self.url}/{self.owner}/{self.repo}.git"

    @property
    def bare_path(self) -> Path:
        """The bare repository behind ``git_url``."""
        if self.git_root is None:
            raise RuntimeError("FakeGitHub(git_root=...) is needed for git")
        return self.git_root / self.owner / f"{self.repo}.git"

    def reset(self, *, git_root: Path | None = None) -> None:
        """Forget every issue, pull request, request and failure; defaults back (same port)."""
        with self._lock:
            for f in fields(self):
                if f.name in ("port", "git_root"):
                    continue
                if f.default is not MISSING:
                    setattr(self, f.name, f.default)
                elif f.default_factory is not MISSING:
                    setattr(self, f.name, f.default_factory())
            self.git_root = git_root
            self._failures.clear()
            self._tick = 0
            self._next_id = 1

    # -- setup helpers --------------------------------------------------------------------

    def connect_repo(self, repo_dir: Path, *, remote: str = "origin", push: bool = True) -> None:
        """Create the bare repository, make it ``remote`` of ``repo_dir``, push the default branch.

        The seed push goes straight to the bare repository's path (no token involved); the
        remote-tracking refs are set as a fetch would set them.
        """
        bare = self.bare_path
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git(bare.parent, "init", "-q", "--bare", "-b", self.default_branch, bare.name)
        _git(repo_dir, "remote", "add", remote, self.git_url)
        if push:
            branch = self.default_branch
            _git(repo_dir, "push", "-q", str(bare), f"HEAD:refs/heads/{branch}")
            _git(repo_dir, "update-ref", f"refs/remotes/{remote}/{branch}", "HEAD")
            _git(
                repo_dir,
                "symbolic-ref",
                f"refs/remotes/{remote}/HEAD",
                f"refs/remotes/{remote}/{branch}",
            )

    def add_fork(self, name: str) -> str:
        """A fork of the repository owned by the same owner (``owner/name``); its git URL.

        Its bare repository starts as a copy of the base one, like GitHub's fork button.
        """
        if self.git_root is None:
            raise RuntimeError("FakeGitHub(git_root=...) is needed for git")
        bare = self.git_root / self.owner / f"{name}.git"
        _git(self.git_root / self.owner, "clone", "-q", "--bare", str(self.bare_path), bare.name)
        with self._lock:
            self.forks.append(name)
        return f"{self.url}/{self.owner}/{name}.git"

    def config_toml(self, **publish: Any) -> str:
        """A config file's text pointing ``[github]`` at the fake (plus ``[publish]`` keys)."""
        text = f'[github]\napi_url = "{self.api_url}"\ntimeout = 5\n'
        if publish:
            text += "\n[publish]\n" + "".join(
                f"{k} = {json.dumps(v)}\n" for k, v in publish.items()
            )
        return text

    def write_config(self, path: Path, **publish: Any) -> Path:
        """Write :meth:`config_toml` to ``path`` (for ``AGENT_TUI_CONFIG``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.config_toml(**publish))
        return path

    def now(self) -> str:
        """The fake's clock, one minute later at every call (deterministic ``updated_at``)."""
        with self._lock:
            self._tick += 1
            return (_EPOCH + timedelta(minutes=self._tick)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _new_number(self) -> int:
        with self._lock:
            number = max([0, *self.issues]) + 1
            return number

    def _id(self) -> int:
        with self._lock:
            self._next_id += 1
            return 1000 + self._next_id

    def _user(self, login: str | None = None) -> dict[str, Any]:
        login = login or self.login
        api = f"{self.api_url}/users/{login}"
        return {
            "login": login,
            "id": abs(hash(login)) % 100000,
            "node_id": "MDQ6VXNlcjE=",
            "avatar_url": f"{self.url}/avatars/{login}",
            "gravatar_id": "",
            "url": api,
            "html_url": f"{self.url}/{login}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": "User",
            "user_view_type": "public",
            "site_admin": False,
        }

    def _label(self, name: str) -> dict[str, Any]:
        return {
            "id": abs(hash(name)) % 100000,
            "node_id": "LA_kwDO",
            "url": f"{self.api_url}/repos/{self.owner}/{self.repo}/labels/{name}",
            "name": name,
            "color": "ededed",
            "default": False,
            "description": f"{name} issues",
        }

    def repo_json(self, name: str | None = None) -> dict[str, Any]:
        """``GET /repos/{owner}/{repo}`` (or the same owner's fork ``name``)."""
        full = f"{self.owner}/{name or self.repo}"
        api = f"{self.api_url}/repos/{full}"
        templates = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "hooks_url": "/hooks",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
        }
        host = urlsplit(self.url).netloc
        open_count = sum(1 for i in self.issues.values() if i["state"] == "open")
        stamp = _EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "id": 4242 + len(name or ""),
            "node_id": "R_kgDO",
            "name": name or self.repo,
            "full_name": full,
            "private": not self.public,
            "owner": self._user(self.owner),
            "html_url": f"{self.url}/{full}",
            "description": "fake repository",
            "fork": name is not None and name != self.repo,
            "url": api,
            **{key: api + tail for key, tail in templates.items()},
            "git_url": f"git://{host}/{full}.git",
            "ssh_url": f"git@{host}:{full}.git",
            "clone_url": f"{self.url}/{full}.git",
            "svn_url": f"{self.url}/{full}",
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "size": 42,
            "default_branch": self.default_branch,
            "forks": len(self.forks),
            "forks_count": len(self.forks),
            "stargazers_count": 0,
            "watchers": 0,
            "watchers_count": 0,
            "open_issues": open_count,
            "open_issues_count": open_count,
            "network_count": len(self.forks),
            "subscribers_count": 1,
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "license": None,
            "topics": [],
            "visibility": "private" if not self.public else "public",
            "pushed_at": stamp,
            "created_at": stamp,
            "updated_at": stamp,
            "permissions": {
                "admin": True,
                "maintain": True,
                "push": True,
                "triage": True,
                "pull": True,
            },
        }

    def add_issue(
        self,
        title: str,
        body: str = "",
        *,
        labels: tuple[str, ...] | list[str] = (),
        assignees: tuple[str, ...] | list[str] = (),
        milestone: str | None = None,
        comments: tuple[str, ...] | list[str] = (),
        state: str = "open",
    ) -> dict[str, Any]:
        """Create an issue (with ``comments`` as comment bodies); returns its JSON."""
        with self._lock:
            number = self._new_number()
            now = self.now()
            base = f"{self.api_url}/repos/{self.owner}/{self.repo}/issues/{number}"
            issue: dict[str, Any] = {
                "url": base,
                "repository_url": f"{self.api_url}/repos/{self.owner}/{self.repo}",
                "labels_url": base + "/labels{/name}",
                "comments_url": base + "/comments",
                "events_url": base + "/events",
                "html_url": f"{self.url}/{self.owner}/{self.repo}/issues/{number}",
                "id": self._id(),
                "node_id": f"I_kwDO{number}",
                "number": number,
                "title": title,
                "user": self._user(),
                "labels": [self._label(n) for n in labels],
                "state": state,
                "locked": False,
                "assignee": self._user(assignees[0]) if assignees else None,
                "assignees": [self._user(a) for a in assignees],
                "milestone": self._milestone(milestone) if milestone else None,
                "comments": 0,
                "created_at": now,
                "updated_at": now,
                "closed_at": now if state == "closed" else None,
                "author_association": "OWNER",
                "active_lock_reason": None,
                "body": body or None,
                "reactions": {
                    "url": base + "/reactions",
                    "total_count": 0,
                    **dict.fromkeys(
                        ("+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket"), 0
                    ),
                },
                "timeline_url": base + "/timeline",
                "performed_via_github_app": None,
                "state_reason": "completed" if state == "closed" else None,
            }
            self.issues[number] = issue
            self.comments[number] = []
            for text in comments:
                self.add_comment(number, text)
            return issue

    def _milestone(self, title: str) -> dict[str, Any]:
        return {
            "url": f"{self.api_url}/repos/{self.owner}/{self.repo}/milestones/1",
            "html_url": f"{self.url}/{self.owner}/{self.repo}/milestone/1",
            "labels_url": f"{self.api_url}/repos/{self.owner}/{self.repo}/milestones/1/labels",
            "id": 77,
            "node_id": "MI_kwDO",
            "number": 1,
            "state": "open",
            "title": title,
            "description": None,
            "creator": self._user(),
            "open_issues": 1,
            "closed_issues": 0,
            "created_at": _EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": _EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "closed_at": None,
            "due_on": None,
        }

    def add_comment(self, number: int, body: str, author: str = "hubot") -> dict[str, Any]:
        """Comment on issue ``number`` (bumps its ``updated_at`` and comment count)."""
        with self._lock:
            now = self.now()
            comment = {
                "id": self._id(),
                "node_id": "IC_kwDO",
                "url": f"{self.api_url}/repos/{self.owner}/{self.repo}/issues/comments/1",
                "html_url": self.issues[number]["html_url"] + "#issuecomment-1",
                "body": body,
                "user": self._user(author),
                "created_at": now,
                "updated_at": now,
                "issue_url": self.issues[number]["url"],
                "author_association": "CONTRIBUTOR",
            }
            self.comments[number].append(comment)
            self.issues[number]["comments"] = len(self.comments[number])
            self.issues[number]["updated_at"] = now
            return comment

    def update_issue(self, number: int, **changes: Any) -> dict[str, Any]:
        """Change an issue's fields (``title``, ``body``, ``state``...); bumps ``updated_at``."""
        with self._lock:
            issue = self.issues[number]
            issue.update(changes)
            issue["updated_at"] = self.now()
            if changes.get("state") == "closed":
                issue["closed_at"] = issue["updated_at"]
            return issue

    def open_pulls(self, head_branch: str | None = None) -> list[dict[str, Any]]:
        """Open pull requests (optionally only those from ``head_branch``)."""
        return [
            p
            for p in self.pulls.values()
            if p["state"] == "open" and (head_branch is None or p["head"]["ref"] == head_branch)
        ]

    # -- failure injection ----------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        message: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching API requests with ``status`` (GitHub's shape).

        Args:
            status: 401, 403, 404, 422, 500...
            method: only this HTTP method.
            path: only paths matching this regex (``search``), without the API prefix.
            message: GitHub's ``message`` (a realistic default per status).
            errors: a 422's ``errors`` list.
            headers: extra response headers.
            times: how many requests to fail.
        """
        default = {
            401: "Bad credentials",
            403: "Resource not accessible by personal access token",
            404: "Not Found",
            422: "Validation Failed",
        }.get(status, "Server Error")
        body: dict[str, Any] = {
            "message": message or default,
            "documentation_url": _DOCS,
            "status": str(status),
        }
        if errors is not None:
            body["errors"] = errors
        with self._lock:
            self._failures.append(
                _Failure(
                    status,
                    method.upper() if method else None,
                    re.compile(path) if path else None,
                    body,
                    headers or {},
                    times,
                )
            )

    def rate_limit(self, *, times: int = 1, method: str | None = None) -> None:
        """Answer the next request(s) like a spent primary rate limit (403, remaining 0)."""
        reset = int(datetime.now(UTC).timestamp()) + 1800
        self.fail(
            403,
            method=method,
            message="API rate limit exceeded for 127.0.0.1. (But here's the good news: "
            "Authenticated requests get a higher rate limit. Check out the documentation "
            "for more details.)",
            headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
            times=times,
        )

    def secondary_rate_limit(
        self,
        *,
        status: int = 403,
        retry_after: int | str = 60,
        message: str | None = None,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer like GitHub's secondary rate limit: 403 or 429 with ``Retry-After``.

        The primary limit is not spent (``X-RateLimit-Remaining`` stays high and
        ``X-RateLimit-Reset`` is an hour away), so only ``Retry-After`` says when to retry.
        ``message`` may lack the words "rate limit" (a 429 is one anyway).
        """
        self.fail(
            status,
            method=method,
            path=path,
            message=message
            or "You have exceeded a secondary rate limit. Please wait a few minutes before you "
            "try again. If you reach out to GitHub Support for help, please include the "
            "request ID FAKE:1.",
            headers={"Retry-After": str(retry_after)},
            times=times,
        )

    def answer_html(
        self,
        *,
        method: str | None = "GET",
        path: str | None = None,
        status: int = 200,
        times: int = 1,
    ) -> None:
        """Answer the next matching request(s) with an HTML login page and a 200.

        What a captive portal or an SSO proxy in front of GitHub Enterprise does.
        """
        page = (
            b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head>"
            b"<body><form action='/login'><input name='user'></form></body></html>"
        )
        with self._lock:
            self._failures.append(
                _Failure(
                    status,
                    method.upper() if method else None,
                    re.compile(path) if path else None,
                    RawBody(page, "text/html; charset=utf-8"),
                    {},
                    times,
                )
            )

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method and failure.method != method:
                    continue
                if failure.path and not failure.path.search(path):
                    continue
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def api_requests(self, method: str | None = None, path: str | None = None) -> list[Any]:
        """Recorded API requests, optionally filtered by method and path regex."""
        return [
            r
            for r in self.requests
            if r.kind == "api"
            and (method is None or r.method == method)
            and (path is None or re.search(path, r.path))
        ]

    # -- auth -----------------------------------------------------------------------------

    def _auth(self, headers: dict[str, str]) -> str:
        """``ok``, ``anonymous`` or ``bad``."""
        value = headers.get("authorization", "")
        if not value:
            return "anonymous"
        if self.token is None:
            return "ok"
        scheme, _, cred = value.partition(" ")
        if scheme.lower() in ("token", "bearer"):
            return "ok" if cred == self.token else "bad"
        if scheme.lower() == "basic":
            try:
                _user, _, password = base64.b64decode(cred).decode().partition(":")
            except ValueError:
                return "bad"
            return "ok" if password == self.token else "bad"
        return "bad"

    # -- REST -----------------------------------------------------------------------------

    def handle_api(
        self, method: str, path: str, query: dict[str, str], body: Any, auth: str, full: str
    ) -> tuple[int, Any, dict[str, str]]:
        """Route one REST request: (status, JSON body, extra headers)."""
        failure = self._take_failure(method, path)
        if failure is not None:
            return failure.status, failure.body, failure.headers
        if auth == "bad":
            return 401, _error("Bad credentials"), {}
        prefix = f"/repos/{self.owner}/{self.repo}"
        if method == "GET" and path == "/user":
            if auth != "ok":
                return 401, _error("Requires authentication"), {}
            return 200, self._user(), {}
        if not path.startswith(prefix):
            return 404, _error("Not Found"), {}
        if auth == "anonymous" and (not self.public or method != "GET"):
            if not self.public:
                return 404, _error("Not Found"), {}
            return 401, _error("Requires authentication"), {}
        rest = path[len(prefix) :]
        with self._lock:
            return self._route(method, rest, query, body, full)

    def _route(
        self, method: str, rest: str, query: dict[str, str], body: Any, full: str
    ) -> tuple[int, Any, dict[str, str]]:
        if method == "GET" and rest in ("", "/"):
            return 200, self.repo_json(), {}
        if method == "GET" and rest == "/issues":
            return self._list_issues(query, full)
        m = re.fullmatch(r"/issues/(\d+)", rest)
        if m and method == "GET":
            issue = self.issues.get(int(m[1]))
            return (200, issue, {}) if issue else (404, _error("Not Found"), {})
        m = re.fullmatch(r"/issues/(\d+)/comments", rest)
        if m and method == "GET":
            number = int(m[1])
            if number not in self.issues:
                return 404, _error("Not Found"), {}
            return self._paginate(self.comments.get(number, []), query, full)
        m = re.fullmatch(r"/issues/(\d+)/labels", rest)
        if m and method == "POST":
            return self._add_labels(int(m[1]), body)
        if rest == "/pulls" and method == "GET":
            return self._list_pulls(query, full)
        if rest == "/pulls" and method == "POST":
            return self._create_pull(body)
        return 404, _error("Not Found"), {}

    def _list_issues(self, query: dict[str, str], full: str) -> tuple[int, Any, dict[str, str]]:
        state = query.get("state", "open")
        items = [i for i in self.issues.values() if state == "all" or i["state"] == state]
        since = query.get("since")
        if since:
            items = [i for i in items if i["updated_at"] >= _normalize_time(since)]
        if query.get("labels"):
            wanted = set(query["labels"].split(","))
            items = [i for i in items if wanted <= {lab["name"] for lab in i["labels"]}]
        key = "updated_at" if query.get("sort") == "updated" else "created_at"
        reverse = query.get("direction", "desc") == "desc"
        items.sort(key=lambda i: (i[key], i["number"]), reverse=reverse)
        return self._paginate(items, query, full)

    def _paginate(
        self, items: list[dict[str, Any]], query: dict[str, str], full: str
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(100, int(query.get("per_page", "30"))))
        page = max(1, int(query.get("page", "1")))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def link(n: int, rel: str) -> str:
            q = {**query, "page": str(n), "per_page": str(per_page)}
            return f'<{full}?{urlencode(q)}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    def _add_labels(self, number: int, body: Any) -> tuple[int, Any, dict[str, str]]:
        issue = self.issues.get(number)
        if issue is None:
            return 404, _error("Not Found"), {}
        names = body.get("labels") if isinstance(body, dict) else body
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return 422, _error("Invalid request.\n\nFor 'links/0/schema', is not an array."), {}
        have = {lab["name"] for lab in issue["labels"]}
        issue["labels"] += [self._label(n) for n in names if n not in have]
        if number in self.pulls:
            self.pulls[number]["labels"] = issue["labels"]
        return 200, issue["labels"], {}

    def _list_pulls(self, query: dict[str, str], full: str) -> tuple[int, Any, dict[str, str]]:
        state = query.get("state", "open")
        items = [p for p in self.pulls.values() if state == "all" or p["state"] == state]
        if query.get("head"):
            owner, _, ref = query["head"].rpartition(":")
            items = [
                p
                for p in items
                if p["head"]["ref"] == ref and (not owner or p["head"]["user"]["login"] == owner)
            ]
        if query.get("base"):
            items = [p for p in items if p["base"]["ref"] == query["base"]]
        items.sort(key=lambda p: p["number"], reverse=True)
        return self._paginate(items, query, full)

    def _create_pull(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        doc = f"{_DOCS}/pulls/pulls#create-a-pull-request"
        if not isinstance(body, dict) or not body.get("head") or not body.get("base"):
            missing = [k for k in ("head", "base") if not (body or {}).get(k)]
            detail = f"Invalid request.\n\n{', '.join(missing)} wasn't supplied."
            return 422, _error(detail, doc=doc), {}
        if not body.get("title"):
            return 422, _error("Validation Failed", errors=[_missing("title")], doc=doc), {}
        if body.get("draft") and not self.drafts_supported:
            msg = "Draft pull requests are not supported in this repository."
            return 422, _error(msg, doc=doc), {}
        head: str = body["head"]
        head_owner, _, head_ref = head.rpartition(":")
        head_owner = head_owner or self.owner
        base_ref: str = body["base"]
        head_name = self.repo
        if body.get("head_repo"):
            fork_owner, _, head_name = str(body["head_repo"]).partition("/")
            if fork_owner != head_owner or head_name not in (self.repo, *self.forks):
                return 422, _error("Validation Failed", errors=[_invalid("head_repo")]), {}
        head_bare = self.bare_path.with_name(f"{head_name}.git") if self.git_root else None
        head_sha = self._ref_sha(head_ref, head_bare)
        base_sha = self._ref_sha(base_ref)
        if self.git_root is not None and head_sha is None:
            return 422, _error("Validation Failed", errors=[_invalid("head")], doc=doc), {}
        if self.git_root is not None and base_sha is None:
            return 422, _error("Validation Failed", errors=[_invalid("base")], doc=doc), {}
        for pull in self.open_pulls(head_ref):
            same_repo = pull["head"]["repo"]["name"] == head_name
            if pull["head"]["user"]["login"] == head_owner and same_repo:
                msg = f"A pull request already exists for {head_owner}:{head_ref}."
                return 422, _error("Validation Failed", errors=[_custom(msg)], doc=doc), {}
        if head_sha and base_sha and self._no_commits(base_sha, head_sha, head_bare):
            msg = f"No commits between {base_ref} and {head_ref}"
            return 422, _error("Validation Failed", errors=[_custom(msg)], doc=doc), {}
        number = self._new_number()
        now = self.now()
        full = f"{self.owner}/{self.repo}"
        html = f"{self.url}/{full}/pull/{number}"
        api = f"{self.api_url}/repos/{full}"
        pull = {
            "url": f"{api}/pulls/{number}",
            "id": self._id(),
            "node_id": f"PR_kwDO{number}",
            "html_url": html,
            "diff_url": html + ".diff",
            "patch_url": html + ".patch",
            "issue_url": f"{api}/issues/{number}",
            "commits_url": f"{api}/pulls/{number}/commits",
            "review_comments_url": f"{api}/pulls/{number}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{number}/comments",
            "statuses_url": f"{api}/statuses/{head_sha or '0' * 40}",
            "number": number,
            "state": "open",
            "locked": False,
            "title": body["title"],
            "user": self._user(),
            "body": body.get("body"),
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "labels": [],
            "milestone": None,
            "draft": bool(body.get("draft", False)),
            "head": {
                "label": f"{head_owner}:{head_ref}",
                "ref": head_ref,
                "sha": head_sha or "0" * 40,
                "user": self._user(head_owner),
                "repo": self.repo_json(head_name),
            },
            "base": {
                "label": f"{self.owner}:{base_ref}",
                "ref": base_ref,
                "sha": base_sha or "0" * 40,
                "user": self._user(self.owner),
                "repo": self.repo_json(),
            },
            "author_association": "OWNER",
            "auto_merge": None,
            "merged": False,
            "mergeable": None,
            "mergeable_state": "unknown",
            "merged_by": None,
            "comments": 0,
            "review_comments": 0,
            "commits": 1,
            "additions": 1,
            "deletions": 0,
            "changed_files": 1,
            "maintainer_can_modify": bool(body.get("maintainer_can_modify", False)),
        }
        pull["_links"] = {
            key: {"href": href}
            for key, href in {
                "self": pull["url"],
                "html": html,
                "issue": pull["issue_url"],
                "comments": pull["comments_url"],
                "review_comments": pull["review_comments_url"],
                "review_comment": pull["review_comment_url"],
                "commits": pull["commits_url"],
                "statuses": pull["statuses_url"],
            }.items()
        }
        self.pulls[number] = pull
        # the issues endpoint lists pull requests too, with a ``pull_request`` key
        self.issues[number] = {
            "url": pull["issue_url"],
            "repository_url": api,
            "labels_url": pull["issue_url"] + "/labels{/name}",
            "comments_url": pull["comments_url"],
            "events_url": pull["issue_url"] + "/events",
            "html_url": html,
            "id": pull["id"],
            "node_id": f"PR_kwDO{number}",
            "number": number,
            "locked": False,
            "author_association": "OWNER",
            "title": pull["title"],
            "user": pull["user"],
            "labels": [],
            "state": "open",
            "assignees": [],
            "assignee": None,
            "milestone": None,
            "comments": 0,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "body": pull["body"],
            "draft": pull["draft"],
            "pull_request": {
                "url": pull["url"],
                "html_url": html,
                "diff_url": pull["diff_url"],
                "patch_url": pull["patch_url"],
                "merged_at": None,
            },
        }
        self.comments[number] = []
        return 201, pull, {"Location": pull["url"]}

    def _ref_sha(self, ref: str, bare: Path | None = None) -> str | None:
        bare = bare or (self.bare_path if self.git_root is not None else None)
        if bare is None or not bare.exists():
            return None
        proc = subprocess.run(
            [
                "git",
                "--git-dir",
                str(bare),
                "rev-parse",
                "--verify",
                "-q",
                f"refs/heads/{ref}",
            ],
            capture_output=True,
            text=True,
        )
        return proc.stdout.strip() or None

    def _no_commits(self, base_sha: str, head_sha: str, bare: Path | None = None) -> bool:
        proc = subprocess.run(
            [
                "git",
                "--git-dir",
                str(bare or self.bare_path),
                "rev-list",
                "--count",
                f"{base_sha}..{head_sha}",
            ],
            capture_output=True,
            text=True,
        )
        return proc.stdout.strip() == "0"

    # -- git smart HTTP -------------------------------------------------------------------

    def handle_git(
        self, handler: BaseHTTPRequestHandler, path: str, query: str, body: bytes, auth: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Serve one git smart-HTTP request through ``git http-backend``."""
        if self.git_root is None:
            return 404, {}, b"no git here\n"
        pushing = "git-receive-pack" in path or "service=git-receive-pack" in query
        if auth == "bad" or (pushing and auth != "ok" and self.token is not None):
            return 401, {"WWW-Authenticate": 'Basic realm="GitHub"'}, b"Unauthorized\n"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.git_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.git_root),
        }
        if auth == "ok":
            env["REMOTE_USER"] = self.login
        encoding = handler.headers.get("Content-Encoding")
        if encoding:
            env["HTTP_CONTENT_ENCODING"] = encoding
        protocol = handler.headers.get("Git-Protocol")
        if protocol:
            env["GIT_PROTOCOL"] = protocol
        proc = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
        )
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status = 200
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        return status, headers, payload


def _error(
    message: str, *, errors: list[dict[str, Any]] | None = None, doc: str = _DOCS
) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "documentation_url": doc}
    if errors is not None:
        body["errors"] = errors
    return body


def _missing(field_name: str) -> dict[str, Any]:
    return {"resource": "PullRequest", "code": "missing_field", "field": field_name}


def _invalid(field_name: str) -> dict[str, Any]:
    return {"resource": "PullRequest", "field": field_name, "code": "invalid"}


def _custom(message: str) -> dict[str, Any]:
    return {"resource": "PullRequest", "code": "custom", "message": message}


def _normalize_time(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGitHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _dispatch(self) -> None:
        fake = self.fake
        split = urlsplit(self.path)
        raw = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        auth = fake._auth(headers)
        if split.path.startswith(API_PREFIX + "/") or split.path == API_PREFIX:
            path = split.path[len(API_PREFIX) :] or "/"
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            record = RecordedRequest(self.command, path, query, headers, body, "api")
            fake.requests.append(record)
            status, data, extra = fake.handle_api(
                self.command, path, query, body, auth, fake.url + split.path
            )
            record.status, record.response = status, data
            limit = 5000 if auth == "ok" else 60
            remaining = str(max(0, limit - len(fake.requests)))
            reset = str(int(datetime.now(UTC).timestamp()) + 3600)
            out = {
                "Content-Type": "application/json; charset=utf-8",
                "X-GitHub-Media-Type": "github.v3; format=json",
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": remaining,
                "X-RateLimit-Reset": reset,
                "X-RateLimit-Used": str(limit - int(remaining)),
                "X-RateLimit-Resource": "core",
                "X-GitHub-Request-Id": f"FAKE:{len(fake.requests)}",
                **extra,
            }
            if isinstance(data, RawBody):
                out["Content-Type"] = data.content_type
                self._send(status, out, data.payload)
            else:
                self._send(status, out, json.dumps(data).encode())
            return
        fake.requests.append(
            RecordedRequest(self.command, split.path, {"raw": split.query}, headers, None, "git")
        )
        status, out, payload = fake.handle_git(self, split.path, split.query, raw, auth)
        self._send(status, out, payload)

    do_GET = _dispatch  # noqa: N815
    do_POST = _dispatch  # noqa: N815
    do_PATCH = _dispatch  # noqa: N815
    do_PUT = _dispatch  # noqa: N815
    do_DELETE = _dispatch  # noqa: N815


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="session")
def github_fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGitHub]:
    """One server per test session: a stable port lets clients (ghapi) be reused."""
    fake = FakeGitHub(git_root=tmp_path_factory.mktemp("github-git")).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def github_fake(github_fake_server: FakeGitHub, tmp_path: Path) -> Iterator[FakeGitHub]:
    """A running :class:`FakeGitHub` (``acme/widgets``, token ``FAKE_TOKEN``), fresh state,
    git storage under this test's ``tmp_path``."""
    fake = github_fake_server
    fake.reset(git_root=tmp_path / "github-git")
    if not fake.running:
        fake.start()
    try:
        yield fake
    finally:
        if not fake.running:
            fake.start()
        fake.reset(git_root=tmp_path / "github-git")
