"""Where the files shipped with agent-tui live (``models.toml`` and ``prompts/``).

Why two places: a wheel carries them inside the ``engine`` package (``engine/_bundled``,
see ``pyproject.toml``), while an editable install or a checkout reads them from the
repository root, so a developer's edit is live without reinstalling.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the ``engine`` package


def _root() -> Path:
    bundled = _PACKAGE_DIR / "_bundled"
    if (bundled / "models.toml").is_file():
        return bundled
    return _PACKAGE_DIR.parent


def bundled_models_toml() -> Path:
    """Path of the ``models.toml`` shipped with the app."""
    return _root() / "models.toml"


def bundled_prompts_dir() -> Path:
    """Directory of the prompt profiles shipped with the app."""
    return _root() / "prompts"
