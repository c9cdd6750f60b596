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

import fnmatch
import re
import threading
from dataclasses import dataclass

_LOCK = threading.Lock()

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


def scan_text(path: str, text: str) -> list[SecretFinding]:
    """Suspected secrets in ``text`` (the content of ``path``), in line order.

    Uses detect-secrets' full plugin set with its default heuristic filters (UUIDs,
    templated values, lock files...), plus a private-key-block check. ``path`` matters:
    some filters judge by the file name (lock files, swagger files).

    Args:
        path: repository-relative path of the text (used by filters and in findings).
        text: the content to scan.

    Returns:
        The findings, at most one per (line, kind), without secret values.
    """
    findings: dict[tuple[int, str], SecretFinding] = {}
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if _PRIVATE_KEY_RE.search(line):
            findings[(number, "Private Key")] = SecretFinding(path, number, "Private Key")
    for number, kind in _detect_secrets(path, lines):
        findings.setdefault((number, kind), SecretFinding(path, number, kind))
    return [findings[key] for key in sorted(findings)]


def _detect_secrets(path: str, lines: list[str]) -> list[tuple[int, str]]:
    """(line, type) of every detect-secrets finding, under the process-wide lock."""
    from detect_secrets.core.scan import _process_line_based_plugins
    from detect_secrets.settings import default_settings

    if not lines:
        return []
    with _LOCK, default_settings():
        return [
            (int(secret.line_number), str(secret.type))
            for secret in _process_line_based_plugins(
                lines=list(enumerate(lines, start=1)), filename=path
            )
        ]
