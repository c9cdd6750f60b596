"""Secret detection shared by the context builder and the checks.

Why one module: what is never *sent* to the model (the context) and what is flagged in a
*proposal* (the checks) must agree on what a secret is. Two layers:

* :func:`sensitive_path_reason` - files that are secret by their name alone (``.env*``,
  private keys, credential stores), refused without reading them;
* :func:`scan_text` - detect-secrets' plugins and default filters over a file's text (AWS
  keys, private key blocks, tokens, high-entropy strings next to secret-looking keywords).

detect-secrets keeps its settings in process-global state, so every scan here runs under one
lock. A finding never carries the secret's value, only where it is and what kind it is, so a
finding can be logged or shown without leaking what it found.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
from collections import Counter
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from engine.context.secrets_prefilter import _LOCK, _prefilter

#: (glob on the file name, lower-cased; reason). Checked in order, first match wins.
_SENSITIVE_NAMES: tuple[tuple[str, str], ...] = (
    (".env", "environment file (.env*)"),
    (".env.*", "environment file (.env*)"),
    (".envrc", "environment file (.env*)"),
    ("*.pem", "private key or certificate file"),
    ("*.key", "private key file"),
    ("*.p12", "private key store"),
    ("*.pfx", "private key store"),
    ("*.jks", "private key store"),
    ("*.keystore", "private key store"),
    ("*.ppk", "private key file"),
    ("id_rsa", "SSH private key"),
    ("id_dsa", "SSH private key"),
    ("id_ecdsa", "SSH private key"),
    ("id_ed25519", "SSH private key"),
    (".netrc", "credential file"),
    ("_netrc", "credential file"),
    (".pgpass", "credential file"),
    (".pypirc", "credential file"),
    (".npmrc", "credential file"),
    (".git-credentials", "credential file"),
    (".htpasswd", "credential file"),
    (".dockercfg", "credential file"),
    ("credentials", "credential file"),
    ("credentials.json", "credential file"),
    ("credentials.yml", "credential file"),
    ("credentials.yaml", "credential file"),
    ("client_secret*.json", "credential file"),
    ("service-account*.json", "credential file"),
    ("*.kdbx", "password database"),
    ("secrets.yml", "credential file"),
    ("secrets.yaml", "credential file"),
    ("secrets.json", "credential file"),
    ("secrets.toml", "credential file"),
    ("*.tfstate", "Terraform state (holds secrets)"),
    ("*.tfstate.backup", "Terraform state (holds secrets)"),
)
#: (path suffix, reason) for credential files known by their directory.
_SENSITIVE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".aws/credentials", "credential file"),
    (".docker/config.json", "credential file"),
    (".kube/config", "credential file"),
    (".ssh/config", "SSH configuration"),
)
#: one regex for "is any name pattern matched" (fnmatch.translate anchors each pattern).
_ANY_SENSITIVE = re.compile("|".join(fnmatch.translate(p) for p, _r in _SENSITIVE_NAMES))
_SUFFIX_ENDINGS = tuple(s.rsplit("/", 1)[-1] for s, _r in _SENSITIVE_SUFFIXES)
#: detectors that fire on a string's shape alone (entropy, an IP address): hashes, checksums
#: and test data trip them too, so the proposal checks report them as warnings, not errors.
HEURISTIC_KINDS = frozenset(
    {"Base64 High Entropy String", "Hex High Entropy String", "Public IP (ipv4)"}
)
#: a private key block, checked even when detect-secrets is not consulted.
_PRIVATE_KEY_RE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")


@dataclass(frozen=True)
class SecretFinding:
    """One suspected secret in a text; its value is deliberately not kept."""

    path: str
    """The path the text came from (repository-relative)."""
    line: int
    """1-based line number."""
    kind: str
    """What detect-secrets (or the private key check) thinks it is, e.g. ``AWS Access Key``."""

    @property
    def heuristic(self) -> bool:
        """True when only a shape heuristic fired (it may be a hash, not a secret)."""
        return self.kind in HEURISTIC_KINDS

    def describe(self) -> str:
        """``kind`` at ``path:line``, safe to show (no secret value)."""
        return f"{self.kind} at {self.path}:{self.line}"


def sensitive_path_reason(path: str) -> str | None:
    """Why ``path`` must never be read for the model, judged by its name alone.

    Args:
        path: a repository-relative POSIX path.

    Returns:
        A short reason (``"environment file (.env*)"``) or None when the name is not
        sensitive (its content may still be, see :func:`scan_text`).
    """
    lowered = path.lower()
    name = lowered.rsplit("/", 1)[-1]
    if not _ANY_SENSITIVE.match(name) and not lowered.endswith(_SUFFIX_ENDINGS):
        return None  # the common case, one regex match (50,000 paths in a few ms)
    for pattern, reason in _SENSITIVE_NAMES:
        if fnmatch.fnmatchcase(name, pattern):
            return reason
    for suffix, reason in _SENSITIVE_SUFFIXES:
        if lowered == suffix or lowered.endswith("/" + suffix):
            return reason
    return None


def scan_text(path: str, text: str, *, limit: int | None = None) -> list[SecretFinding]:
    """Suspected secrets in ``text`` (the content of ``path``), in line order.

    Uses detect-secrets' full plugin set with its default heuristic filters (UUIDs,
    templated values, lock files...), plus a private-key-block check and agent-tui's own
    rules for what detect-secrets misses (:data:`OWN_KINDS`: token assignments, Google
    OAuth access tokens, Sentry DSNs...). ``path`` matters: some filters judge by the file
    name (lock files, swagger files), and unquoted values count as literals only in
    configuration files.

    One combined pre-filter pass (:class:`_Prefilter`) finds the lines that any
    detect-secrets plugin could flag; only those are handed to detect-secrets, with their
    surrounding lines as context, so its verdicts are the ones a full scan gives.

    Args:
        path: repository-relative path of the text (used by filters and in findings).
        text: the content to scan.
        limit: stop handing lines to detect-secrets once it has flagged this many (a file
            made of nothing but secret-looking lines would otherwise cost seconds per 100 KB;
            a caller that only needs to know the file holds secrets sets it low).

    Returns:
        The findings, at most one per (line, kind), without secret values.
    """
    return _scan(path, text, prefilter=True, limit=limit)


def scan_text_full(path: str, text: str) -> list[SecretFinding]:
    """:func:`scan_text` without the pre-filter: every line goes through every plugin.

    The reference the pre-filter is tested and benchmarked against (same findings).
    """
    return _scan(path, text, prefilter=False)


class _Lines:
    """A text as detect-secrets reads it: lines without their trailing whitespace.

    Joined with ``"\n"``, a pattern that never spans a line break finds in ``joined``
    exactly what it finds line by line; :meth:`number` maps an offset to its line.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.stripped = [line.rstrip() for line in self.lines]
        self.joined = "\n".join(self.stripped)
        starts = [0]
        for line in self.stripped[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        self._starts = starts

    def number(self, offset: int) -> int:
        """The 1-based number of the line holding ``offset`` in :attr:`joined`."""
        return bisect.bisect_right(self._starts, offset)


def _scan(
    path: str, text: str, *, prefilter: bool, limit: int | None = None
) -> list[SecretFinding]:
    view = _Lines(text)
    if not view.lines:
        return []
    findings: dict[tuple[int, str], SecretFinding] = {}
    for match in _PRIVATE_KEY_RE.finditer(view.joined):
        number = view.number(match.start())
        findings[(number, "Private Key")] = SecretFinding(path, number, "Private Key")
    for number, kind in _own_rules(path, view):
        findings.setdefault((number, kind), SecretFinding(path, number, kind))
    for number, kind in _detect_secrets_lines(path, view, prefilter=prefilter, limit=limit):
        findings.setdefault((number, kind), SecretFinding(path, number, kind))
    return [findings[key] for key in sorted(findings)]


def detect_secrets_findings(path: str, text: str, *, prefilter: bool) -> list[tuple[int, str]]:
    """(line, kind) of detect-secrets' findings alone, with or without the pre-filter.

    For tests and benchmarks: with ``prefilter=False`` every line goes through every
    plugin (detect-secrets' own line scan); with it, only the candidate lines do.
    """
    return sorted(set(_detect_secrets_lines(path, _Lines(text), prefilter=prefilter)))


def _detect_secrets_lines(
    path: str, view: _Lines, *, prefilter: bool, limit: int | None = None
) -> list[tuple[int, str]]:
    candidates: set[int] | None = None
    if prefilter:
        pre = _prefilter()
        if pre is not None:
            candidates = pre.candidates(view)
            if not candidates:
                return []  # the common case: detect-secrets is not even set up
    return _detect_secrets(path, view.lines, candidates, limit)


def _detect_secrets(
    path: str, lines: list[str], candidates: AbstractSet[int] | None, limit: int | None = None
) -> list[tuple[int, str]]:
    """(line, type) of every detect-secrets finding, under the process-wide lock.

    ``candidates`` (1-based line numbers) limits the lines handed to the plugins; None
    scans every line. This is detect-secrets' own line loop
    (``detect_secrets.core.scan._process_line_based_plugins``) with the same filters,
    plugins and context of five lines around each line, so a candidate line gets the
    verdict a full scan gives it.
    """
    from detect_secrets.core.scan import _is_filtered_out, _scan_line
    from detect_secrets.settings import default_settings, get_plugins
    from detect_secrets.util.code_snippet import get_code_snippet

    if not lines:
        return []
    numbers = range(1, len(lines) + 1) if candidates is None else sorted(candidates)
    out: list[tuple[int, str]] = []
    with _LOCK, default_settings():
        plugins = get_plugins()
        for number in numbers:
            if limit is not None and len({n for n, _kind in out}) >= limit:
                break
            line = lines[number - 1].rstrip()
            context = get_code_snippet(lines=lines, line_number=number)
            if _is_filtered_out(
                required_filter_parameters=["line"], filename=path, line=line, context=context
            ):
                continue
            for plugin in plugins:
                for secret in _scan_line(
                    plugin=plugin, filename=path, line=line, line_number=number, context=context
                ):
                    if not _is_filtered_out(
                        required_filter_parameters=["context"],
                        filename=secret.filename,
                        secret=secret.secret_value,
                        plugin=plugin,
                        line=line,
                        context=context,
                    ):
                        out.append((number, str(secret.type)))
    return out


# ------------------------------------------------------------------------------------------
# agent-tui's own rules: secrets detect-secrets' defaults let through

#: kinds found by agent-tui's own rules (not detect-secrets)
OWN_KINDS = frozenset(
    {
        "Secret Token Assignment",
        "Google OAuth Access Token",
        "Google API Key",
        "GitHub Fine-Grained Token",
        "Hugging Face Token",
        "npm Token",
        "Sentry DSN",
    }
)
#: (kind, pattern): fixed shapes; no pattern can match across a line break
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # Each starts with its literal (the regex engine's fast search), then looks behind it.
    ("Google OAuth Access Token", re.compile(r"ya29(?<![\w.]ya29)\.[0-9A-Za-z_-]{20,}")),
    ("Google API Key", re.compile(r"AIza(?<![\w-]AIza)[0-9A-Za-z_-]{35}(?![\w-])")),
    ("GitHub Fine-Grained Token", re.compile(r"github_pat_(?<!\wgithub_pat_)[0-9A-Za-z_]{60,}")),
    ("Hugging Face Token", re.compile(r"hf_(?<![\w-]hf_)[A-Za-z]{34}(?![\w-])")),
    ("npm Token", re.compile(r"npm_(?<![\w-]npm_)[A-Za-z0-9]{36}(?![\w-])")),
    # https://<public key>[:<secret key>]@host/<project>: a key as the URL's user name
    (
        "Sentry DSN",
        re.compile(
            r"://[0-9a-fA-F]{32}(?::[0-9a-fA-F]{32})?@[A-Za-z0-9.-]+(?::[0-9]{1,5})?/[0-9]+"
        ),
    ),
)
#: a credential-named key assigned a literal: ``api_token: "..."``, ``ACCESS_TOKEN=...``,
#: ``"authToken": "..."``, ``SENTRY_DSN=...``. The name must *end* in the credential word
#: (``tokenizer_path`` is no credential); detect-secrets' keyword plugin already covers
#: password, secret, api_key and the like.
_TOKEN_ASSIGN = re.compile(
    r"(?i)(?:token|auth|credential|dsn|access[_-]?key)s?(?![\w-])"
    r"[\"'\]]{0,2}[ \t]*(?::=|=>|==?|:)[ \t]*"
    r"(?:(?P<quote>[\"'`])(?P<quoted>[A-Za-z0-9_\-./+=~:@]{16,})(?P=quote)"
    r"|(?P<bare>[A-Za-z0-9_\-./+=~]{16,})(?=[\s#;,&|)\]}]|$))",
    re.MULTILINE,
)
#: where :data:`_TOKEN_ASSIGN` can start, in lower-cased ASCII text
_TOKEN_WORD = re.compile(r"token|auth|credential|dsn|access[_-]?key")
_PLACEHOLDER_RE = re.compile(
    r"(?i)example|sample|dummy|fake|placeholder|changeme|change_me|your|x{4}|redacted|"
    r"test|secret_here|token_here|<|\*{3}"
)
#: file types whose unquoted values are literals (config files, shell); in code an unquoted
#: value is a reference (``token = settings.API_TOKEN``)
_CONFIG_SUFFIXES = frozenset(
    {
        "",
        ".env",
        ".ini",
        ".cfg",
        ".conf",
        ".config",
        ".properties",
        ".yaml",
        ".yml",
        ".toml",
        ".sh",
        ".bash",
        ".zsh",
        ".txt",
        ".tfvars",
        ".example",
        ".sample",
        ".dist",
        ".local",
    }
)


def _shannon(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _token_like(value: str) -> bool:
    """A literal that looks generated: letters and digits, varied, not a placeholder/path."""
    if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
        return False
    if "://" in value or value.startswith(("/", "./", "../", "~/")):
        return False
    if re.search(r"\.[A-Za-z]{2,5}$", value):  # a file name
        return False
    if _PLACEHOLDER_RE.search(value):
        return False
    return _shannon(value) > 3.0


def _own_rules(path: str, view: _Lines) -> list[tuple[int, str]]:
    """(line, kind) of agent-tui's own rules over the (stripped, joined) text."""
    out: list[tuple[int, str]] = []
    for kind, rx in _SHAPES:
        out.extend((view.number(m.start()), kind) for m in rx.finditer(view.joined))
    name = path.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    suffix = name[dot:] if dot > 0 else ""
    unquoted_ok = suffix in _CONFIG_SUFFIXES or name.startswith(".env")
    joined = view.joined
    matches: Iterable[re.Match[str] | None]
    if joined.isascii():  # find the key words case-sensitively in the lower-cased text
        starts = (m.start() for m in _TOKEN_WORD.finditer(joined.lower()))
        matches = (_TOKEN_ASSIGN.match(joined, start) for start in starts)
    else:
        matches = _TOKEN_ASSIGN.finditer(joined)
    for m in matches:
        if m is None:
            continue
        value = m.group("quoted") or m.group("bare")
        if m.group("bare") and not unquoted_ok:
            continue
        if _token_like(value):
            out.append((view.number(m.start()), "Secret Token Assignment"))
    return out
