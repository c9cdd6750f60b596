"""The secret scan's pre-filter: one pass over a text finds the lines detect-secrets could flag.

Why apart from the scan: it is a small compiler of its own. It reads detect-secrets' plugin
patterns (``re._parser`` trees) for the literals every match must contain, and gates each
plugin on them, so the plugins run only on the few suspect lines of a file (the scan's cost
on a context build). :mod:`engine.context.secrets_scan` decides what is a secret; this module
only decides where to look, and ``tests/test_secrets_scan.py`` checks it never hides a line
the plugins alone would flag.
"""

from __future__ import annotations

import math
import re
import re._constants as _sre
import re._parser as _sre_parse
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.context.secrets_scan import _Lines

#: detect-secrets keeps its settings in process-global state: every scan and the pre-filter's
#: one-time build run under this one lock
_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Gate:
    """What a line needs before one plugin pattern can flag it.

    ``literals``: strings one of which the pattern's every match contains (text, ignore
    case), found in one pass over the whole text; empty when the pattern has no selective
    literal (then every line is a suspect). ``finder``: a regex that every match contains a
    match of and that never spans a line break (the high-entropy plugins' quoted runs).
    ``verify``: the plugin's own regexes, run on the suspect lines only; a line is a
    candidate when one of them matches (none: the literal or finder alone decides).
    """

    literals: tuple[tuple[str, bool], ...] = ()
    finder: re.Pattern[str] | None = None
    verify: tuple[re.Pattern[str], ...] = ()


class _Prefilter:
    """The lines any detect-secrets plugin could flag, found without running the plugins.

    Built from the plugins themselves (:func:`_build_prefilter`): a plugin can only flag a
    line that one of its patterns matches, and every pattern needs something cheap to
    find first (a :class:`_Gate`):

    * a regex plugin's pattern needs one of its *required literals*, read from the
      compiled pattern (``AKIA``, ``eyJ``, ``BEGIN RSA PRIVATE KEY``, ``ghp``...);
    * the keyword plugin needs one of its keywords (``password``, ``secret``...);
    * a high-entropy plugin needs a quoted run of its charset long enough to exceed its
      entropy limit (a string of fewer than ``2**limit`` characters cannot).

    Each literal is searched once over the whole text (case-insensitive ones over the
    lower-cased text when it is ASCII, where that is the same thing), and only the lines
    it finds are checked with the plugin's own pattern. A candidate is a line that some
    plugin pattern matches, so detect-secrets, run on the candidates only, finds what it
    finds on every line.
    """

    def __init__(self, gates: list[_Gate]) -> None:
        self.gates = gates
        self._exact: dict[tuple[str, bool], re.Pattern[str]] = {}
        self._lowered: dict[str, re.Pattern[str]] = {}
        for gate in gates:
            for text, icase in gate.literals:
                self._exact[(text, icase)] = re.compile(
                    re.escape(text), re.IGNORECASE if icase else 0
                )
                if icase:
                    self._lowered[text] = re.compile(re.escape(text.lower()))

    def candidates(self, view: _Lines) -> set[int]:
        """1-based numbers of the lines to hand to detect-secrets."""
        joined = view.joined
        ascii_text = joined.isascii()
        lowered = joined.lower() if ascii_text else joined
        found_by: dict[tuple[str, bool], set[int]] = {}
        found: set[int] = set()
        stripped = view.stripped
        every_line = range(1, len(stripped) + 1)
        for gate in self.gates:
            suspects: set[int] | range
            if gate.finder is not None:
                suspects = {view.number(m.start()) for m in gate.finder.finditer(joined)}
            elif gate.literals:
                suspects = set()
                for key in gate.literals:
                    lines = found_by.get(key)
                    if lines is None:
                        text, icase = key
                        if icase and ascii_text:
                            hits = self._lowered[text].finditer(lowered)
                        else:
                            hits = self._exact[key].finditer(joined)
                        lines = found_by[key] = {view.number(m.start()) for m in hits}
                    suspects |= lines
            else:
                suspects = every_line
            if not gate.verify:
                found.update(suspects)
                continue
            if isinstance(suspects, range) and len(gate.verify) == 1:  # C speed per line
                verdicts = map(gate.verify[0].search, stripped)
                found.update(number for number, hit in enumerate(verdicts, start=1) if hit)
                continue
            for number in suspects:
                if number in found:
                    continue
                line = stripped[number - 1]
                if any(rx.search(line) for rx in gate.verify):
                    found.add(number)
        return found


_PREFILTER: list[_Prefilter | None] = []
#: required literals shorter than this are not selective: every line is a suspect
_MIN_LITERAL = 2
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _prefilter() -> _Prefilter | None:
    """The pre-filter for detect-secrets' default plugins (built once), None if unusable."""
    if not _PREFILTER:
        with _LOCK:
            if not _PREFILTER:
                _PREFILTER.append(_build_prefilter())
    return _PREFILTER[0]


def _literal_gate(literals: frozenset[tuple[str, bool]] | None) -> tuple[tuple[str, bool], ...]:
    """The literals as a gate's, or () when they are missing or not selective."""
    if (
        not literals
        or min(len(text) for text, _i in literals) < _MIN_LITERAL
        or any(ch in _LINE_BREAKS for text, _i in literals for ch in text)
    ):
        return ()
    return tuple(sorted(literals))


def _build_prefilter() -> _Prefilter | None:
    """Derive the pre-filter from the default plugins' own keywords and patterns.

    Returns None (every line is scanned) when a plugin is of a kind it does not know,
    so a detect-secrets upgrade that adds a new kind of plugin cannot lose findings.
    """
    from detect_secrets.plugins import keyword
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
    from detect_secrets.settings import default_settings, get_plugins

    gates: list[_Gate] = []
    with default_settings():
        plugins = list(get_plugins())
    for plugin in plugins:
        if isinstance(plugin, keyword.KeywordDetector):
            if plugin.keyword_exclude is not None:  # pragma: no cover - not a default
                return None
            # Every keyword pattern, for any file type (a superset of the file's own).
            patterns = {
                rx
                for table in (
                    keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
                    *keyword.REGEX_BY_FILETYPE.values(),
                )
                for rx in table
            }
            literals: set[tuple[str, bool]] = set()
            for word in keyword.DENYLIST:
                found = _required_literals(re.compile(word, re.IGNORECASE))
                if not found:  # pragma: no cover - every keyword is a literal
                    return None
                literals |= found
            gate_literals = _literal_gate(frozenset(literals))
            verify = tuple(sorted(patterns, key=lambda rx: rx.pattern))
            gates.append(_Gate(literals=gate_literals, verify=verify))
        elif isinstance(plugin, HighEntropyStringsPlugin):
            # Shannon entropy is at most log2(distinct characters): a string of fewer than
            # 2**limit characters cannot exceed the limit. The quotes and the charset hold
            # no line break, so this never spans lines.
            shortest = math.floor(2**plugin.entropy_limit) + 1
            charset = re.escape(plugin.charset)
            finder = re.compile(f"['\"][{charset}]{{{shortest},}}['\"]")
            gates.append(_Gate(finder=finder))
        elif isinstance(plugin, RegexBasedDetector):
            for rx in plugin.denylist:
                gates.append(_Gate(literals=_literal_gate(_required_literals(rx)), verify=(rx,)))
        else:
            return None
    return _Prefilter(gates)


def _required_literals(rx: re.Pattern[str]) -> frozenset[tuple[str, bool]] | None:
    """Strings one of which every match of ``rx`` contains: (text, ignore case).

    Read from the parsed pattern: a run of literal characters (with the alternatives of a
    group that follows it: ``A(?:KIA|SIA)`` gives ``AKIA``, ``ASIA``) in the top-level
    sequence, in a group, in a repeat of at least one, or one per branch of an
    alternation. The most selective choice (the longest shortest string) is kept; None
    when the pattern has no required literal.
    """
    if not isinstance(rx.pattern, str):  # pragma: no cover - plugins use str patterns
        return None
    try:
        parsed = _sre_parse.parse(rx.pattern, rx.flags)
    except Exception:  # pragma: no cover - a pattern re compiled parses again
        return None
    return _required(list(parsed), bool(rx.flags & re.IGNORECASE))


Literals = frozenset[tuple[str, bool]]


def _leading(items: list[Any], icase: bool) -> tuple[Literals | None, bool]:
    """Strings one of which every match of ``items`` starts with, and whether they are all
    it can match (then what follows a group may extend them: ``(ghp|gho)_`` -> ``ghp_``)."""
    prefixes = {""}
    complete = True
    for op, av in items:
        if op is _sre.LITERAL:
            prefixes = {p + chr(av) for p in prefixes}
            continue
        options: Literals | None = None
        if op is _sre.IN and len(av) <= 16 and all(o is _sre.LITERAL for o, _v in av):
            options, complete = frozenset((chr(v), icase) for _o, v in av), True
        elif op is _sre.BRANCH:
            subs = [_leading(list(branch), icase) for branch in av[1]]
            if all(s for s, _c in subs):
                options = frozenset().union(*(s for s, _c in subs if s))
                complete = all(c for _s, c in subs)
        elif op is _sre.SUBPATTERN and not (av[1] | av[2]) & re.IGNORECASE:
            options, complete = _leading(list(av[3]), icase)
        if options is None or len(prefixes) * len(options) > 64:
            complete = False
            break
        prefixes = {p + text for p in prefixes for text, _i in options}
        if not complete:
            break
    if "" in prefixes:
        return None, False
    return frozenset((p, icase) for p in prefixes), complete


def _required(items: list[Any], icase: bool) -> Literals | None:
    """Strings one of which every match of the sequence ``items`` contains."""
    best: Literals | None = None

    def consider(option: Literals | None) -> None:
        nonlocal best
        if not option or any(not text for text, _i in option):
            return
        if best is None or min(len(t) for t, _i in option) > min(len(t) for t, _i in best):
            best = option

    for index, (op, av) in enumerate(items):
        if op in (_sre.LITERAL, _sre.BRANCH, _sre.SUBPATTERN, _sre.IN):
            consider(_leading(items[index:], icase)[0])
        if op is _sre.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            sub_icase = icase
            if add_flags & re.IGNORECASE:
                sub_icase = True
            if del_flags & re.IGNORECASE:
                sub_icase = False
            consider(_required(list(sub), sub_icase))
        elif op is _sre.BRANCH:
            options = [_required(list(branch), icase) for branch in av[1]]
            if all(options):
                consider(frozenset().union(*(o for o in options if o)))
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            low, _high, sub = av
            if low >= 1:
                consider(_required(list(sub), icase))
        elif op is _sre.ATOMIC_GROUP:
            consider(_required(list(av), icase))
    return best
