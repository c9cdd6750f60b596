"""The GitHub token: which variable or ``gh`` login holds it, and which host it may go to.

Credentials follow their host, as ``gh`` does: ``GH_TOKEN``/``GITHUB_TOKEN`` (or ``gh auth
token``) go to api.github.com only; an Enterprise host the user's own config names gets
``GH_ENTERPRISE_TOKEN``/``GITHUB_ENTERPRISE_TOKEN`` (or ``gh auth token --hostname``); plain
http gets a token only on loopback. The token lives only in the client's request headers and
is never put in a message, a log or the cache. Without one, reads are anonymous (and we say so).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from engine.core.redact import register
from engine.issues.forge.github import DEFAULT_API_URL, api_host


@dataclass(frozen=True)
class Token:
    """A GitHub token and where it came from; the value never shows in a repr."""

    value: str = field(repr=False)
    source: str
    """``GH_TOKEN``, ``GITHUB_TOKEN``, ``GH_ENTERPRISE_TOKEN`` or ``gh auth token``."""


ANONYMOUS_NOTE = (
    "no GitHub token (GH_TOKEN, GITHUB_TOKEN or `gh auth login`): reading anonymously "
    "(60 requests/hour; opening pull requests needs a token)"
)


#: the variables that hold a token for github.com (never sent anywhere else)
GITHUB_COM_TOKEN_VARS = ("GH_TOKEN", "GITHUB_TOKEN")
#: the variables that hold a token for a GitHub Enterprise host the user configured
ENTERPRISE_TOKEN_VARS = ("GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN")
#: every variable agent-tui reads a GitHub token from
TOKEN_VARS = (*GITHUB_COM_TOKEN_VARS, *ENTERPRISE_TOKEN_VARS)


def is_loopback(host: str) -> bool:
    """``host`` (no port) is this machine: ``localhost``, 127.0.0.0/8 or ``::1``."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_host(api_url: str, configured_api_url: str = DEFAULT_API_URL) -> str | None:
    """The host a token may be sent to for ``api_url``, or None when no token may go there.

    The rules are ``gh``'s: a github.com token goes to ``https://api.github.com`` only; any
    other host is a GitHub Enterprise server and gets a token only when it is the host of
    ``configured_api_url`` (the user's own, trusted ``[github] api_url``); and no token is
    ever sent over plain http except to a loopback address.

    Args:
        api_url: where the request goes.
        configured_api_url: the ``[github] api_url`` of the trusted configuration layers.

    Returns:
        ``github.com``, the Enterprise ``host[:port]``, or None.
    """
    parts = urlsplit(api_url)
    host = api_host(api_url)
    if not host or parts.scheme not in ("http", "https"):
        return None
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        return None
    if host == "github.com":
        return host if parts.scheme == "https" else None
    configured = urlsplit(configured_api_url)
    if (configured.scheme, api_host(configured_api_url)) != (parts.scheme, host):
        return None
    return host


def resolve_token(
    api_url: str = DEFAULT_API_URL,
    *,
    configured_api_url: str = DEFAULT_API_URL,
    use_gh: bool = True,
) -> Token | None:
    """The GitHub token to send to ``api_url``, or None (anonymous).

    For ``https://api.github.com``: ``GH_TOKEN``, ``GITHUB_TOKEN``, then ``gh auth token``.
    For a GitHub Enterprise host that the user's configuration names (see :func:`token_host`):
    ``GH_ENTERPRISE_TOKEN``, ``GITHUB_ENTERPRISE_TOKEN``, then ``gh auth token --hostname
    HOST``. Anything else (a host a repository's config chose, plain http to another
    machine) gets no token at all.

    Args:
        api_url: the REST API base the token would be sent to.
        configured_api_url: the trusted ``[github] api_url``.
        use_gh: ask the gh CLI as a last resort.
    """
    host = token_host(api_url, configured_api_url)
    if host is None:
        return None
    names = GITHUB_COM_TOKEN_VARS if host == "github.com" else ENTERPRISE_TOKEN_VARS
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            register(value)
            return Token(value, name)
    gh = shutil.which("gh") if use_gh else None
    if gh:
        try:
            proc = subprocess.run(
                [gh, "auth", "token", "--hostname", host.split(":")[0]],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        value = proc.stdout.strip()
        if proc.returncode == 0 and value and "\n" not in value:
            register(value)  # not in the environment: every redaction must still know it
            return Token(value, "gh auth token")
    return None
