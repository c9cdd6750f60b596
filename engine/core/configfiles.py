"""Which config files ``engine.core.config.load_config`` reads, and a fingerprint of them.

Why a module of its own: finding the files needs only the standard library, while validating
them needs pydantic (~0.1 s to import and build the models). The TUI's first frame asks
"are the inputs of the configuration exactly those of the last start?" (``fingerprint``)
before anything imports pydantic; when they are, what the configuration decided then
(which issue cache, which model name) is what it will decide now.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import platformdirs

from engine.core import trust
from engine.core.resources import bundled_models_toml

CONFIG_ENV_VAR = "AGENT_TUI_CONFIG"
REPO_CONFIG_NAME = ".agent-tui.toml"


def user_config_path() -> Path:
    """The user's config file: ``$AGENT_TUI_CONFIG`` or the platform config dir."""
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("agent-tui")) / "config.toml"


def find_repo_config(start: Path) -> Path | None:
    """The nearest ``.agent-tui.toml`` from ``start`` up to the top of its git work tree."""
    here = start.resolve()
    for directory in (here, *here.parents):
        candidate = directory / REPO_CONFIG_NAME
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def fingerprint(repo_dir: Path) -> str:
    """A hash of everything ``load_config(repo_dir)`` reads: the shipped ``models.toml``, the
    user's and the repository's config files (paths and exact bytes), ``$AGENT_TUI_CONFIG``
    and whether the user trusts the repository's file.

    Equal fingerprints mean ``load_config`` returns the same configuration. Reading the
    files costs well under a millisecond; no TOML is parsed.

    Args:
        repo_dir: the repository directory (where ``.agent-tui.toml`` is looked for).

    Returns:
        A hex sha256.
    """
    h = hashlib.sha256()
    h.update(f"env {os.environ.get(CONFIG_ENV_VAR)!r}\n".encode())
    repo_file = find_repo_config(repo_dir)
    for path in (bundled_models_toml(), user_config_path(), repo_file):
        if path is None:
            h.update(b"none\n")
            continue
        try:
            data = path.read_bytes()
        except OSError:
            h.update(f"missing {path}\n".encode())
            continue
        h.update(f"file {path} {len(data)}\n".encode())
        h.update(data)
        if path == repo_file:
            h.update(b"trusted" if trust.is_trusted(path, data) else b"untrusted")
    return h.hexdigest()
