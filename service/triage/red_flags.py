"""The red-flag screen — pure: no I/O. It can only raise a reply's severity, never lower it.

The contextual rules (``decide``: day rules, qualifiers, combinations) read a reply closely and can be
argued out of an alarm by the day, a qualifier or a missing word. The screen is a second, deliberately
blunt reader for the signs that are an emergency whatever else is said (docs/clinical-basis.md
#emergency-signs): airway and voice, breathing, consciousness and collapse, the colour of lips and skin,
stroke signs, sudden loss of vision, widespread hives with systemic signs, sepsis signs, bleeding that
will not stop. Its vocabulary is data (``templates/triage/vocabulary/red_flags.toml``, validated by
``schema``), broad and multilingual, with

- **stems** for morphological variants: "desmay*" is desmayé, desmayó, desmayada, desmayarme;
- **typo tolerance** with rapidfuzz (optimal string alignment distance — a slip, a missing, extra or
  swapped letter — of 1, or 2 for long words, same first letter) for words the lexicons do not know:
  "breatheing", "desmalle", "fianted", "slured";
- **phrases** that alone are the flag ("passed out", "me desmayé") and **rules** that need one word of
  each of several groups in a clause, sentence or message ("lips" + "blue"; "fever" + "confused"), or an
  intake risk flag ("risk:blood_thinners").

It uses the engine's modifiers: each of its hits goes through the same negation, hypothetical, historical
and quoted-text handling as the rules' hits, so "no trouble breathing" or "what if I pass out?" raises
nothing. A trigger word inside a longer screen phrase ("não consigo respirar", "no puedo mover el
brazo") is part of the phrase, not a negation of what follows. ``decide`` takes the higher severity of
the screen and the rules, and lists the screen's findings (concepts ``red_flag.<id>``) so staff see why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import OSA

from service.triage.normalise import Token, expand_alternatives, fold, is_digits, normalise_phrase
from service.triage.schema import RISK_PREFIX, SLOT, LexiconError, RedFlagsFile, validate_red_flags

END = ""  # the trie key under which a node keeps its payloads
STEM = "*"  # a trie key "*desmay" is the stem "desmay"
CONCEPT_PREFIX = "red_flag."
_CACHE_LIMIT = 50_000


@dataclass(slots=True)
class ScreenHit:
    """A red-flag phrase or a word of one of its groups, where it stands and how it was said. Shaped like
    ``lexicon.Hit``, so the engine's modifier step flags both alike."""

    term: str  # "flag:<id>" for a phrase, "group:<name>" for a group's word
    kind: str
    start: int
    end: int
    words: str
    clause: int = 0
    sentence: int = 0
    flags: set[str] = field(default_factory=set)

    @property
    def present(self) -> bool:
        return not self.flags


@dataclass(frozen=True, slots=True)
class ScreenFinding:
    start: int
    concept: str
    words: str
    severity: str
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Rule:
    groups: tuple[str, ...]  # "group:<name>" terms, one hit of each needed
    risks: frozenset[str]  # intake flags needed (values of RiskFlag)
    scope: str
    max_gap: int | None
    gap_stops: tuple[tuple[str, ...], ...]
    in_order: bool = False


@dataclass(frozen=True, slots=True)
class _Flag:
    id: str
    concept: str
    severity: str
    rules: tuple[_Rule, ...]


@dataclass(frozen=True, eq=False)
class RedFlagScreen:
    trie: Mapping[str, Any]
    words: frozenset[str]  # every exact word of a phrase or group
    stems: frozenset[str]
    flags: Mapping[str, _Flag]
    known: frozenset[str]  # real words of the lexicons: never typo-corrected
    min_length: int
    two_edits_from: int
    _words_by_first: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _stems_by_first: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _cache: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    # No prefix longer than the longest stem can be one: a 64 KB "word" is not sliced 64,000 times.
    _longest_stem: int = 0

    # -- step 2: where the screen's words are --------------------------------------------------------

    def find(self, body: str, tokens: Sequence[Token]) -> list[ScreenHit]:
        """Non-overlapping matches of the screen's phrases and group words, longest first."""
        keys = [
            (*self._keys(t.norm), SLOT) if t.value is not None or is_digits(t.norm) else self._keys(t.norm)
            for t in tokens
        ]
        if not any(keys):
            return []
        n = len(tokens)
        spans: dict[tuple[int, int], set[str]] = {}
        for i in range(n):
            if not keys[i]:
                continue
            frontier: list[Mapping[str, Any]] = [self.trie]
            j = i
            while frontier and j < n:
                following = [node[key] for node in frontier for key in keys[j] if key in node]
                j += 1
                for node in following:
                    payloads = node.get(END)
                    if payloads:
                        spans.setdefault((i, j), set()).update(payloads)
                frontier = following
        hits: list[ScreenHit] = []
        # Each flag's phrases and each group's words are resolved apart, longest first, so one never hides
        # another's ("una cortina negra" is a vision event, and "cortina negra" the vision flag itself; "gone
        # grey" is the sight going, and "grey" a colour).
        by_term: dict[str, list[tuple[int, int]]] = {}
        for span, payloads in spans.items():
            for term in payloads:
                by_term.setdefault(term, []).append(span)
        for term, term_spans in by_term.items():
            taken = [False] * n
            for start, end in sorted(term_spans, key=lambda s: (s[0] - s[1], s[0])):
                if any(taken[start:end]):
                    continue
                for k in range(start, end):
                    taken[k] = True
                hits.append(
                    ScreenHit(term, "red_flag", start, end, body[tokens[start].start : tokens[end - 1].end])
                )
        hits.sort(key=lambda h: (h.start, h.term))
        return hits

    def _keys(self, norm: str) -> tuple[str, ...]:
        cached = self._cache.get(norm)
        if cached is not None:
            return cached
        keys: list[str] = [norm] if norm in self.words else []
        top = min(len(norm), self._longest_stem)
        keys.extend(STEM + norm[:size] for size in range(top, 2, -1) if norm[:size] in self.stems)
        if not keys:
            keys = self._typo_keys(norm)
        result = tuple(keys)
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache[norm] = result
        return result

    def _typo_keys(self, norm: str) -> list[str]:
        """A word the lexicons do not know, one slip away from a screen word or stem (two for long
        words), with the same first letter: "breatheing" → breathing, "desmallé" → desmay*."""
        if len(norm) < self.min_length or norm in self.known or not norm.isalpha():
            return []
        limit = 2 if len(norm) >= self.two_edits_from else 1
        found: list[str] = []
        pool = self._words_by_first.get(norm[0], ())
        if pool:
            matches = process.extract(norm, pool, scorer=OSA.distance, score_cutoff=limit, limit=None)
            if matches:
                best = min(score for _, score, _ in matches)
                found.extend(word for word, score, _ in matches if score == best)
        for stem in self._stems_by_first.get(norm[0], ()):
            if len(stem) < self.min_length or len(norm) < len(stem):
                continue
            size = len(stem)
            if any(OSA.distance(stem, norm[: size + extra], score_cutoff=1) <= 1 for extra in (-1, 0, 1)):
                found.append(STEM + stem)
        return found

    # -- step 4: which flags are raised ----------------------------------------------------------------

    def findings(
        self, hits: Sequence[ScreenHit], norms: Sequence[str], risk_flags: frozenset[str]
    ) -> list[ScreenFinding]:
        """A finding per flag said by one of its phrases (flagged as said: negated, hypothetical…), and
        per flag whose rule has a present member of every group in one scope."""
        out: list[ScreenFinding] = []
        raised: set[str] = set()
        for hit in hits:
            if hit.term.startswith("flag:"):
                flag = self.flags[hit.term[5:]]
                out.append(
                    ScreenFinding(hit.start, flag.concept, hit.words, flag.severity, frozenset(hit.flags))
                )
                if hit.present:
                    raised.add(flag.id)
        present = [h for h in hits if h.present and h.term.startswith("group:")]
        if not present:
            return out
        terms = {h.term for h in present}
        for flag in self.flags.values():
            if flag.id in raised:
                continue
            for rule in flag.rules:
                if not rule.risks <= risk_flags or not terms.issuperset(rule.groups):
                    continue
                members = _satisfied(rule, present, norms)
                if members:
                    ordered = sorted(members, key=lambda h: h.start)
                    words = " … ".join(h.words for h in ordered)
                    if rule.risks:
                        words = f"{words} (risk flag: {', '.join(sorted(rule.risks))})"
                    out.append(ScreenFinding(ordered[0].start, flag.concept, words, flag.severity))
                    raised.add(flag.id)
                    break
        return out


def _satisfied(rule: _Rule, present: Sequence[ScreenHit], norms: Sequence[str]) -> list[ScreenHit]:
    units: dict[int, list[ScreenHit]] = {}
    for hit in present:
        key = hit.clause if rule.scope == "clause" else hit.sentence if rule.scope == "sentence" else 0
        units.setdefault(key, []).append(hit)
    for unit in units.values():
        candidates = [[h for h in unit if h.term == group] for group in rule.groups]
        if not all(candidates):
            continue
        if len(candidates) == 2 and (rule.max_gap is not None or rule.gap_stops or rule.in_order):
            for first in candidates[0]:
                for second in candidates[1]:
                    if rule.in_order and first.start >= second.start:
                        continue
                    if first.start != second.start and _close(rule, first, second, norms):
                        return [first, second]
            continue
        chosen: list[ScreenHit] = []
        for group in candidates:  # one distinct hit per group: a word in two groups counts once
            spare = [h for h in group if all(h.start != c.start for c in chosen)]
            if not spare:
                break
            chosen.append(spare[0])
        else:
            return chosen
    return []


def _close(rule: _Rule, a: ScreenHit, b: ScreenHit, norms: Sequence[str]) -> bool:
    first, second = (a, b) if a.start <= b.start else (b, a)
    gap = norms[first.end : second.start]
    if rule.max_gap is not None and len(gap) > rule.max_gap:
        return False
    words = tuple(gap)
    for stop in rule.gap_stops:
        size = len(stop)
        if any(words[i : i + size] == stop for i in range(len(words) - size + 1)):
            return False
    return True


# --------------------------------------------------------------------------------------------------
# Compiling the data
# --------------------------------------------------------------------------------------------------


def _pattern(phrase: str, word_map: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A phrase as trie keys: each word through the engine's tables (so "can't" is "cant", "pls" is
    "please"), a stem ("desmay*") folded only, as the key "*desmay"."""
    keys: list[str] = []
    for word in phrase.split():
        if word.endswith("*"):
            keys.append(STEM + fold(word[:-1]))
        else:
            keys.extend(normalise_phrase(word, word_map))
    return tuple(keys)


def _add(trie: dict[str, Any], keys: Iterable[str], payload: str) -> None:
    node = trie
    for key in keys:
        node = node.setdefault(key, {})
    node[END] = (*node.get(END, ()), payload) if payload not in node.get(END, ()) else node[END]


def compile_red_flags(
    raw: Mapping[str, Any], word_map: Mapping[str, tuple[str, ...]], known: Iterable[str]
) -> RedFlagScreen:
    """Validate (``schema``) and compile ``red_flags.toml``. ``known``: the lexicons' own words, which the
    typo tolerance never "corrects" into a red flag."""
    data: RedFlagsFile = validate_red_flags(raw)
    trie: dict[str, Any] = {}
    words: set[str] = set()
    stems: set[str] = set()

    def add(file_entry: str, phrase: str, payload: str) -> None:
        for variant in expand_alternatives(phrase):
            keys = _pattern(variant, word_map)
            if not keys:
                raise LexiconError(
                    "red_flags", file_entry, f"phrase {phrase!r} has no words after normalising"
                )
            for key in keys:
                if key.startswith(STEM):
                    stems.add(key[1:])
                elif key != SLOT:
                    words.add(key)
            _add(trie, keys, payload)

    for name, group in data.groups.items():
        for phrase in group.phrases():
            add(f"[groups.{name}]", phrase, f"group:{name}")
    flags: dict[str, _Flag] = {}
    for name, flag in data.flags.items():
        for phrase in flag.phrases():
            add(f"[flags.{name}]", phrase, f"flag:{name}")
        rules = tuple(
            _Rule(
                groups=tuple(f"group:{m}" for m in rule.all_of if not m.startswith(RISK_PREFIX)),
                risks=frozenset(m[len(RISK_PREFIX) :] for m in rule.all_of if m.startswith(RISK_PREFIX)),
                scope=rule.scope,
                max_gap=rule.max_gap,
                gap_stops=tuple(normalise_phrase(stop, word_map) for stop in rule.gap_stops),
                in_order=rule.in_order,
            )
            for rule in flag.when
        )
        flags[name] = _Flag(name, CONCEPT_PREFIX + name, flag.severity, rules)
    protected = {fold(w) for w in data.typos.protected}
    known_words = frozenset(set(known) | protected | set(word_map)) - words
    by_first: dict[str, list[str]] = {}
    for word in words:
        if len(word) >= data.typos.min_length and word.isalpha():
            by_first.setdefault(word[0], []).append(word)
    stems_by_first: dict[str, list[str]] = {}
    for stem in stems:
        stems_by_first.setdefault(stem[0], []).append(stem)
    return RedFlagScreen(
        trie=trie,
        words=frozenset(words),
        stems=frozenset(stems),
        flags=flags,
        known=known_words,
        min_length=data.typos.min_length,
        two_edits_from=data.typos.two_edits_from,
        _words_by_first={k: tuple(sorted(v)) for k, v in by_first.items()},
        _stems_by_first={k: tuple(sorted(v)) for k, v in stems_by_first.items()},
        _longest_stem=max(map(len, stems), default=0),
    )
