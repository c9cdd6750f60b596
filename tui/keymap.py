"""Binding ids and the publish confirmation key: what a ``[tui] keymap`` may change.

Why a module of its own: the publish plan needs the confirm key, the Help screen the keys of
every binding, and the app the rules that refuse an unsafe keymap. Here they read one table
without importing each other (this module imports no screen). The app holds the catalogue of
every screen's bindings (``tui.app.binding_catalogue``), since it is the one that knows the
screens.

Publishing is only ever confirmed by the ``confirm_publish`` binding (``ctrl+y`` by
default); a keymap that would put it on Enter, Space or a plain character is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from textual.binding import Binding

CONFIRM_PUBLISH_ID = "confirm_publish"
"""The id of the one binding that starts a publish (``tui.screens.publish_plan``)."""
DEFAULT_CONFIRM_KEY = "ctrl+y"
"""Its key unless the keymap says otherwise."""
UNSAFE_CONFIRM_KEYS = frozenset({"enter", "space", "tab", "escape", "return", "ctrl+m", "ctrl+j"})
"""Keys that must never confirm a publish, whatever the keymap says (plain characters too)."""

Catalogue = list[tuple[str, str, list[Binding]]]
"""Every screen's bindings: (screen title, class name, bindings), for Help and keymaps."""


def bindings_of(cls: type) -> list[Binding]:
    """The ``Binding`` objects of a screen or widget class (tuples in ``BINDINGS`` have no id)."""
    return [b for b in getattr(cls, "BINDINGS", []) if isinstance(b, Binding)]


def binding_ids(catalogue: Catalogue) -> set[str]:
    """The ids a keymap may name."""
    return {b.id for _title, _cls, bindings in catalogue for b in bindings if b.id}


def split_keymap(
    keymap: Mapping[str, str], known: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """A ``[tui] keymap`` table split into what can be applied and what is refused.

    Refused: unknown binding ids, and any ``confirm_publish`` key that could be pressed by
    accident (Enter, Space, Tab, Escape or a plain character).

    Args:
        keymap: binding id -> comma-separated keys.
        known: the binding ids of the app (``binding_ids``).

    Returns:
        (the safe entries, one line per refused entry).
    """
    known = set(known)
    safe: dict[str, str] = {}
    problems = []
    for binding_id, keys in sorted(keymap.items()):
        if binding_id not in known:
            problems.append(
                f"unknown binding id {binding_id!r} (known: {', '.join(sorted(known))})"
            )
            continue
        if binding_id == CONFIRM_PUBLISH_ID:
            unsafe = [
                key
                for key in (k.strip().lower() for k in keys.split(","))
                if key in UNSAFE_CONFIRM_KEYS or len(key) == 1
            ]
            if unsafe:
                problems += [
                    f"{CONFIRM_PUBLISH_ID} cannot be {key!r}: publishing needs a key that is "
                    "never pressed by accident (e.g. ctrl+y)"
                    for key in unsafe
                ]
                continue
        safe[binding_id] = keys
    return safe, problems


def keys_of(binding: Binding, keymap: Mapping[str, str]) -> list[str]:
    """The keys that run ``binding`` under ``keymap`` (its own keys when it is not remapped)."""
    raw = keymap.get(binding.id, binding.key) if binding.id else binding.key
    return [key.strip() for key in raw.split(",")]


def confirm_key(keymap: Mapping[str, str]) -> str:
    """The key that confirms a publish under ``keymap`` (the first one when it has several)."""
    return keymap.get(CONFIRM_PUBLISH_ID, DEFAULT_CONFIRM_KEY).split(",")[0].strip()
