"""The compiled triage lexicon — pure: no I/O. Builds, once, everything ``service.core.triage`` needs.

Every clinical decision lives in ``templates/triage/*.toml`` (a clinician reviews those, not this file).
``service.triage_rules.load_lexicon`` reads them; ``Lexicon.from_dicts`` compiles the plain dicts into
tables — the normalisation tables with the one-letter typos of key symptom words generated once, the
concept, combination and modifier rules, and one token trie of every phrase — raising ``LexiconError``
(naming the file and entry) for a mistake in the data. The compiled ``Lexicon`` does the first two steps
of triage:

1. **Normalise** each token: lower case, accents stripped for matching (the reported words are cut from
   the original text), repeated letters collapsed ("sooo swolllen"), texting shorthand, misspellings and
   emoji mapped through tables, one-letter typos of key symptom words corrected.
2. **Match** every phrase of the lexicon (concepts, qualifiers, cues, modifier triggers, opt-out/in
   phrases) with one token trie; overlaps go to the longest phrase wherever it starts: "can't breathe" is
   one airway phrase, so its "can't" is never read as a negation; "not sure if" is a pseudo-trigger, so
   it neither negates nor makes a hypothetical.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

SEVERITIES: tuple[str, ...] = ("none", "routine", "urgent", "emergency")
_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}

FLAGS: tuple[str, ...] = ("negated", "hypothetical", "historical")
# A combination whose severity is this takes the day rules of the concept it makes.
FROM_CONCEPT = "from_concept"
SCOPES: tuple[str, ...] = ("clause", "sentence", "message")
# The phrase lists a concept, qualifier, cue or keyword table may have (matching ignores which one a
# phrase is in: a Portuguese or Spanglish reply mixes them freely).
LANGUAGES: tuple[str, ...] = ("en", "es", "pt")

# A token is an emoticon (":)"), a number ("38.5"), a word (letters/digits, inner apostrophes and slashes:
# "can't", "w/o"), a line break (a sentence boundary in SMS) or any other single character (punctuation,
# an emoji).
_TOKEN = re.compile(
    r"[:;=][-']?[()DPp](?![^\W_])|<3|\d+(?:[.,]\d+)?[fFcC]?(?![^\W_])|[^\W_]+(?:['’/][^\W_]+)*/?|\n|\S"
)
_REPEAT = re.compile(r"([^\W\d_])\1{2,}")
# Zero-width joiners, variation selectors and skin-tone modifiers only decorate an emoji.
_EMOJI_DECORATION = frozenset({"\u200d", "\ufe0e", "\ufe0f", *map(chr, range(0x1F3FB, 0x1F400))})
_SLOT = "{n}"
_NUMBER = re.compile(r"(\d+(?:[.,]\d+)?)(f|c)?", re.IGNORECASE | re.ASCII)  # "38.5", "101f", "38c"
_CURRENCY = frozenset("$£€¥")  # "$39.50" is a price, not a temperature reading
_END = ""  # the trie key under which a node keeps its payloads (no token is ever empty)
# Between matches of equal length: what the patient reports first (the more serious reading first: "a
# cold sore" is a cold sore, not a cold), then pseudo-triggers, triggers, the rest.
_KIND_RANK = {"term": 4, "optout": 0, "optin": 0, "pseudo": 5, "trigger": 6}
_OTHER_RANK = 7


class LexiconError(ValueError):
    """A mistake in the triage data, naming the file (without ``.toml``) and the entry."""

    def __init__(self, file: str, entry: str, message: str) -> None:
        super().__init__(f"{file}.toml: {entry}: {message}")
        self.file = file
        self.entry = entry
        self.message = message


# --------------------------------------------------------------------------------------------------
# The compiled lexicon
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConceptRule:
    """How one concept's severity is decided (``templates/triage/concepts.toml``).

    day_rules: ``(from_day, severity)`` pairs in rising order; the last whose day has come applies.
    unknown_day: the severity when the day since treatment is not known (defaults to ``severity``).
    escalate: qualifier ids that raise it to ``escalate_to`` when they appear in the same clause.
    persist: qualifier ids ("still", "won't go away") that escalate only from ``persist_from_day`` on, or
        when the day is unknown: "still red" on day 1 is expected, on day 5 it is not.
    calm: qualifier ids ("getting better") that cap it at ``calm_to`` unless an escalating one is present.
    defer: the concept speaks only when no sign is present ("I'm worried" alone is urgent; "I'm worried,
        it's a bit red on day 1" is whatever the redness is on day 1), and is routine otherwise.
    sign: False for what is talk rather than a sign of the skin or body (questions, bookings, photos).
    """

    id: str
    severity: str
    day_rules: tuple[tuple[int, str], ...] = ()
    unknown_day: str | None = None
    by_treatment: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    escalate: frozenset[str] = frozenset()
    escalate_to: str = "urgent"
    persist: frozenset[str] = frozenset()
    persist_from_day: int = 3
    calm: frozenset[str] = frozenset()
    calm_to: str = "routine"
    defer: bool = False
    sign: bool = True

    def base_severity(self, day: int | None, treatment: str | None) -> str:
        rules = self.by_treatment.get(treatment or "", self.day_rules)
        if not rules:
            return self.severity
        if day is None:
            return self.unknown_day or self.severity
        chosen = self.severity
        for from_day, severity in rules:
            if day >= from_day:
                chosen = severity
        return chosen


@dataclass(frozen=True, slots=True)
class Combination:
    """Terms that together mean more: one present member of every group, within one scope.

    For two groups, max_gap says how many words may stand between the members, gap_stops which phrases
    may not ("and my", a comma, "since"), and gap_words / gap_words_reverse, if given, the only words that
    may (first group first, or second group first): "my lip is swelling", "tongue tingling and swelling"
    and "swollen lips" are airway swelling, "my face is swollen and my lips are dry" is not.
    """

    concept: str
    severity: str
    scope: str
    groups: tuple[frozenset[str], ...]
    max_gap: int | None = None
    gap_words: frozenset[str] | None = None
    gap_words_reverse: frozenset[str] | None = None
    gap_stops: tuple[tuple[str, ...], ...] = ()

    @property
    def has_proximity(self) -> bool:
        return bool(self.max_gap is not None or self.gap_words or self.gap_words_reverse or self.gap_stops)

    def close_enough(self, first: _Hit, second: _Hit, norms: Sequence[str], members: Sequence[int]) -> bool:
        if first.end <= second.start:
            gap, allowed = range(first.end, second.start), self.gap_words
        elif second.end <= first.start:
            gap, allowed = range(second.end, first.start), self.gap_words_reverse
        else:
            return True
        if self.max_gap is not None and len(gap) > self.max_gap:
            return False
        if self.gap_stops:
            words = tuple(norms[k] for k in gap)
            for stop in self.gap_stops:
                size = len(stop)
                if any(words[i : i + size] == stop for i in range(len(words) - size + 1)):
                    return False
        # Another member of the same combination may stand between: "lips and tongue are swollen".
        return allowed is None or all(norms[k] in allowed or members[k] for k in gap)


@dataclass(frozen=True, slots=True)
class ModifierCategory:
    """A ConText category: which flags its triggers set and how far their scope reaches."""

    name: str
    flags: tuple[str, ...]
    max_scope: int
    # Terminator groups that end this category's scope, beyond sentence ends (always).
    terminator_ids: frozenset[str]
    # Negation and history stop at a comma unless it only separates a list of findings ("no redness,
    # swelling or pain"); a hypothetical runs on ("what if I sweat at the gym, will it get infected?").
    commas_end_scope: bool = True
    # Two triggers of this category in a row cancel out ("not without pain").
    doubles_cancel: bool = False
    # The trigger removes its flags instead of setting them: "you said to call if there's pus — well,
    # there is" confirms what the sentence first put as a hypothetical. Applied after all the others.
    clears: bool = False
    # A comma does not end the scope when the clause after it goes on with the story: told in the past
    # tense, or a bare time or place with no finding ("last time, years ago, after a peel, I got a huge
    # cold sore"); one in the present does ("last year I had a reaction, my lip is swelling"; modifiers.toml
    # [tense]).
    past_runs_on: bool = False
    # A backward trigger also reaches the sentence before its own, but there only what that sentence put
    # as a what-if: "You said to watch for pus or fever. None of that!" ("My lip is swollen. None of that
    # happened before" keeps the lip.)
    reaches_previous_sentence: bool = False


class _Tok(NamedTuple):  # a NamedTuple: several per reply, and cheaper to build than a frozen dataclass
    norm: str
    start: int
    end: int
    value: float | None = None


@dataclass(slots=True)
class _Match:
    start: int  # token index, inclusive
    end: int  # token index, exclusive
    payloads: tuple[tuple[str, str], ...]


# Built by service.core.triage; defined here because Combination.close_enough measures the gap between two.
@dataclass(slots=True)
class _Hit:
    """A concept, qualifier or cue found in the message, with its modifiers."""

    term: str
    kind: str
    start: int
    end: int
    words: str
    clause: int
    sentence: int
    flags: set[str] = field(default_factory=set)

    @property
    def present(self) -> bool:
        return not self.flags


_Add = Callable[[str, str, Any, tuple[str, str]], None]


@dataclass(frozen=True, eq=False)
class Lexicon:
    """Everything triage needs, compiled once from the plain dicts of the TOML files.

    Build it with ``Lexicon.from_dicts`` (``service.triage_rules.load_lexicon`` reads the files). The
    trie, the typo table and the token cache are built here so a reply costs one pass over its tokens.
    """

    term_kinds: Mapping[str, str]
    concepts: Mapping[str, ConceptRule]
    qualifier_alone: Mapping[str, str | None]
    combinations: tuple[Combination, ...]
    categories: Mapping[str, ModifierCategory]
    trie: dict[str, Any]
    word_map: Mapping[str, tuple[str, ...]]
    vocabulary: frozenset[str]
    sentence_ends: frozenset[str]
    list_separators: frozenset[str]
    connectors: frozenset[str]
    past_words: frozenset[str]
    present_words: frozenset[str]
    optout_alone: frozenset[tuple[str, ...]]
    optin_alone: frozenset[tuple[str, ...]]
    question_marks: frozenset[str]
    question_floor: str
    day_patterns: tuple[tuple[tuple[str, ...], int], ...]
    high_temperature: tuple[tuple[float, float], ...]
    high_temperature_word: str
    temperature_reading_word: str
    fast_pulse: tuple[float, float]
    fast_pulse_word: str
    reply_headers: tuple[re.Pattern[str], ...]
    quote_prefixes: tuple[str, ...]
    _cache: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # the tables run to thousands of entries
        sizes = (
            f"{len(self.concepts)} concepts, {len(self.term_kinds)} terms, {len(self.word_map)} word forms"
        )
        return f"Lexicon({sizes})"

    # ---- building ----------------------------------------------------------------------------------

    @classmethod
    def from_dicts(
        cls,
        *,
        concepts: Mapping[str, Any],
        modifiers: Mapping[str, Any],
        normalise: Mapping[str, Any],
        keywords: Mapping[str, Any],
    ) -> Lexicon:
        """Compile the four data files (already parsed). Raises LexiconError naming file and entry."""
        word_map = _build_word_map(normalise)
        trie: dict[str, Any] = {}
        phrase_words: set[str] = set()

        def add(file: str, entry: str, phrase: Any, payload: tuple[str, str]) -> None:
            if not isinstance(phrase, str) or not phrase.strip():
                raise LexiconError(file, entry, f"phrases must be non-empty strings, got {phrase!r}")
            words = _normalise_phrase(phrase, word_map)
            if not words:
                raise LexiconError(file, entry, f"phrase {phrase!r} has no words after normalising")
            phrase_words.update(words)
            node = trie
            for word in words:
                node = node.setdefault(word, {})
            existing = node.setdefault(_END, ())
            if payload not in existing:
                node[_END] = (*existing, payload)

        term_kinds, concept_rules, qualifier_alone = _build_terms(concepts, add)
        combinations = _build_combinations(concepts, term_kinds, word_map)
        categories, sentence_ends, list_separators, connectors = _build_modifiers(modifiers, add)
        past_words, present_words = _build_tense(modifiers, word_map)
        optout_alone = _build_keywords(keywords, "opt_out", add, word_map)
        optin_alone = _build_keywords(keywords, "opt_in", add, word_map)
        questions = modifiers.get("questions", {})
        question_floor = questions.get("none_becomes", "routine")
        if question_floor not in _RANK:
            raise LexiconError("modifiers", "[questions]", f"none_becomes must be one of {SEVERITIES}")
        day_patterns = _build_day_patterns(normalise, word_map)
        temperature = normalise.get("numbers", {}).get("high_temperature", {})
        ranges = tuple(
            (float(low), float(high))
            for low, high in (
                temperature.get("celsius", [38.0, 43.0]),
                temperature.get("fahrenheit", [100.4, 108]),
            )
        )
        temperature_word = str(temperature.get("word", "hightemp"))
        reading_word = str(temperature.get("reading_word", ""))
        pulse = normalise.get("numbers", {}).get("fast_pulse", {})
        pulse_range = tuple(float(b) for b in pulse.get("range", [0, 0]))
        pulse_word = str(pulse.get("word", ""))
        _rank_payloads(trie, concept_rules)
        quoted = normalise.get("quoted", {})
        vocabulary = frozenset(phrase_words | {w for words in word_map.values() for w in words})
        fuzzy = _build_fuzzy(normalise.get("fuzzy", {}), vocabulary, word_map)
        return cls(
            term_kinds=term_kinds,
            concepts=concept_rules,
            qualifier_alone=qualifier_alone,
            combinations=combinations,
            categories=categories,
            trie=trie,
            word_map={**fuzzy, **word_map},
            vocabulary=vocabulary,
            sentence_ends=sentence_ends,
            list_separators=list_separators,
            connectors=connectors,
            past_words=past_words,
            present_words=present_words,
            optout_alone=optout_alone,
            optin_alone=optin_alone,
            question_marks=frozenset(questions.get("marks", ["?"])),
            question_floor=question_floor,
            day_patterns=day_patterns,
            high_temperature=ranges,
            high_temperature_word=temperature_word,
            temperature_reading_word=reading_word,
            fast_pulse=(pulse_range[0], pulse_range[1]),
            fast_pulse_word=pulse_word,
            reply_headers=tuple(
                re.compile(p, re.IGNORECASE | re.MULTILINE) for p in quoted.get("headers", [])
            ),
            quote_prefixes=tuple(quoted.get("line_prefixes", [">"])),
        )

    # ---- normalising -------------------------------------------------------------------------------

    def strip_quoted(self, text: str) -> str:
        """Drop quoted lines and everything after a reply header: our own footer ("watch for pus or
        fever") quoted back in a reply must never raise an alarm (CLINICAL_NOTES §9)."""
        for header in self.reply_headers:
            found = header.search(text)
            if found:
                text = text[: found.start()]
        if any(prefix in text for prefix in self.quote_prefixes):
            text = "\n".join(
                line for line in text.split("\n") if not line.lstrip().startswith(self.quote_prefixes)
            )
        return text

    def tokenise(self, text: str) -> list[_Tok]:
        tokens: list[_Tok] = []
        for found in _TOKEN.finditer(text):
            raw = found.group()
            if raw in _EMOJI_DECORATION:
                continue
            start, end = found.span()
            number = _NUMBER.fullmatch(raw) if raw[0] in "0123456789" else None
            if number is not None:
                value = float(number.group(1).replace(",", "."))
                word = self._number_word(text, number, start, end, value)
                tokens.append(_Tok(word, start, end, value))
                if number.group(2):
                    tokens.append(_Tok(number.group(2).lower(), start, end))
                continue
            if len(raw) > 1 and "/" in raw and _fold(raw) not in self.word_map:
                # "red/swollen" is two words; "w/o" and "w/" are shorthand (looked up whole above).
                offset = start
                for part in raw.split("/"):
                    if part:
                        tokens.extend(_Tok(w, offset, offset + len(part)) for w in self._normalise_word(part))
                    offset += len(part) + 1
                continue
            tokens.extend(_Tok(word, start, end) for word in self._normalise_word(raw))
        return tokens

    def _is_high_temperature(self, value: float) -> bool:
        return any(low <= value <= high for low, high in self.high_temperature)

    def _number_word(self, text: str, number: re.Match[str], start: int, end: int, value: float) -> str:
        """ "39" → the high-temperature word; "38.3", "100.8f", "39°" (a reading: written with one decimal or
        a unit) → the reading word, a fever on its own; "130" → the fast-pulse word. A price ("$39.50",
        "40.00") is none of them."""
        before = text[max(0, start - 2) : start].strip()[-1:]
        after = text[end : end + 2].strip()[:1]
        if before in _CURRENCY or after in _CURRENCY:
            return number.group(1)
        if self._is_high_temperature(value):
            # One decimal is how a thermometer reads ("38.3"); two are a price ("40.00").
            decimals = re.split(r"[.,]", number.group(1))[1:]
            reading = (decimals and len(decimals[0]) == 1) or number.group(2) or after == "°"
            return (
                self.temperature_reading_word
                if reading and self.temperature_reading_word
                else (self.high_temperature_word)
            )
        if self.fast_pulse_word and self.fast_pulse[0] <= value <= self.fast_pulse[1]:
            return self.fast_pulse_word
        return number.group(1)

    def _normalise_word(self, raw: str) -> tuple[str, ...]:
        cached = self._cache.get(raw)
        if cached is not None:
            return cached
        word = _fold(raw)
        if word not in self.vocabulary and word not in self.word_map and _REPEAT.search(word):
            word = self._collapse(word)
        result = self.word_map.get(word, (word,) if word else ())
        if len(self._cache) > 50_000:  # a long-lived worker must not grow without bound
            self._cache.clear()
        self._cache[raw] = result
        return result

    def _collapse(self, word: str) -> str:
        """ "sooo" → "so", "swolllen" → "swollen": letters typed three or more times in a row."""
        two = _REPEAT.sub(r"\1\1", word)
        if two in self.vocabulary or two in self.word_map:
            return two
        return _REPEAT.sub(r"\1", word)

    # ---- matching ----------------------------------------------------------------------------------

    def match(self, tokens: Sequence[_Tok]) -> list[_Match]:
        """Non-overlapping phrase matches, longest first wherever they start.

        A longer phrase hides the shorter ones inside it or overlapping it: "no puedo respirar" is airway,
        never "no" + "respirar"; "tengo temperatura" wins over the terminator "y tengo" that overlaps it.
        Between phrases of equal length, what the patient reports (concepts, opt-outs) beats pseudo-
        triggers, which beat triggers, which beat terminators. "{n}" in a phrase stands for any number.
        """
        n = len(tokens)
        candidates: list[tuple[int, int, int, tuple[tuple[str, str], ...]]] = []
        for i in range(n):
            node: dict[str, Any] | None = self.trie
            j = i
            while node is not None and j < n:
                tok = tokens[j]
                following = node.get(tok.norm)
                if following is None and (tok.value is not None or _is_digits(tok.norm)):
                    following = node.get(_SLOT)
                node = following
                j += 1
                ranked = node.get(_END) if node is not None else None
                if ranked:
                    candidates.append((j - i, ranked[0], i, ranked[1]))
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        taken = [False] * n
        matches: list[_Match] = []
        for length, _, start, payloads in candidates:
            if not any(taken[start : start + length]):
                for k in range(start, start + length):
                    taken[k] = True
                matches.append(_Match(start, start + length, payloads))
        matches.sort(key=lambda m: m.start)
        return matches

    def day_from_text(self, tokens: Sequence[_Tok]) -> int | None:
        """ "day 5", "3 days ago", "hace 4 días": the patient's own count when the system has none."""
        norms = [t.norm for t in tokens]
        for i, tok in enumerate(tokens):
            # A number typed as digits, or a number word mapped to digits ("day three").
            value = (
                tok.value if tok.value is not None else (float(tok.norm) if _is_digits(tok.norm) else None)
            )
            if value is None or value >= 60:
                continue
            for pattern, slot in self.day_patterns:
                begin = i - slot
                if begin < 0 or begin + len(pattern) > len(norms):
                    continue
                if all(p == _SLOT or p == norms[begin + k] for k, p in enumerate(pattern)):
                    return int(value)
        return None


# --------------------------------------------------------------------------------------------------
# Compiling the data (pure: takes the parsed files, returns tables)
# --------------------------------------------------------------------------------------------------


def _is_digits(word: str) -> bool:
    return word.isascii() and word.isdigit()  # "²".isdigit() is true too, and float() refuses it


def _rank_payloads(node: dict[str, Any], rules: Mapping[str, ConceptRule]) -> None:
    """Store each phrase's payloads with their priority, so matching compares numbers only."""

    def priority(kind: str, ident: str) -> int:
        rule = rules.get(ident) if kind == "term" else None
        if rule is not None:
            return 3 - _RANK[rule.severity]  # emergency 0 … none 3
        return _KIND_RANK.get(kind, _OTHER_RANK)

    for key, child in node.items():
        if key == _END:
            node[_END] = (min(priority(kind, ident) for kind, ident in child), child)
        else:
            _rank_payloads(child, rules)


def _fold(raw: str) -> str:
    """Lower case, no accents, no apostrophes: "Tengo FIÈBRE" → "tengo fiebre", "can't" → "cant"."""
    lowered = raw.lower().replace("'", "").replace("’", "")
    if lowered.isascii():
        return lowered
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _normalise_phrase(phrase: str, word_map: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A lexicon phrase goes through the same tables as a message, so both always agree. "{n}" (any
    number) is kept as it is."""
    if _SLOT in phrase:
        parts = phrase.split(_SLOT)
        out: list[str] = []
        for index, part in enumerate(parts):
            out.extend(_normalise_phrase(part, word_map))
            if index < len(parts) - 1:
                out.append(_SLOT)
        return tuple(out)
    words: list[str] = []
    for found in _TOKEN.finditer(unicodedata.normalize("NFC", phrase)):
        raw = found.group()
        if raw in _EMOJI_DECORATION or raw == "\n":
            continue
        folded = _fold(raw)
        if folded:
            words.extend(word_map.get(folded, (folded,)))
    return tuple(words)


def _build_word_map(normalise: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    word_map: dict[str, tuple[str, ...]] = {}
    for table in ("shorthand", "spelling", "emoji", "number_words"):
        for key, value in normalise.get(table, {}).items():
            if not isinstance(value, str) or not value.strip():
                raise LexiconError(
                    "normalise", f"[{table}] {key!r}", "the replacement must be a non-empty string"
                )
            source = _fold("".join(c for c in key if c not in _EMOJI_DECORATION))
            if not source:
                raise LexiconError("normalise", f"[{table}] {key!r}", "the key is empty after normalising")
            word_map[source] = tuple(_fold(w) for w in value.split())
    # A replacement that is itself a key would make the result depend on table order.
    for key, words in word_map.items():
        for word in words:
            if word in word_map and word != key:
                raise LexiconError("normalise", repr(key), f"maps to {word!r}, which is itself replaced")
    return word_map


def _build_terms(
    concepts: Mapping[str, Any], add: _Add
) -> tuple[dict[str, str], dict[str, ConceptRule], dict[str, str | None]]:
    term_kinds: dict[str, str] = {}
    rules: dict[str, ConceptRule] = {}
    alone: dict[str, str | None] = {}
    sections = {"concept": "concepts", "qualifier": "qualifiers", "cue": "cues"}
    for kind, section in sections.items():
        for ident, entry in concepts.get(section, {}).items():
            where = f"[{section}.{ident}]"
            if ident in term_kinds:
                raise LexiconError("concepts", where, f"the id {ident!r} is already a {term_kinds[ident]}")
            if not isinstance(entry, Mapping):
                raise LexiconError("concepts", where, "must be a table")
            term_kinds[ident] = kind
            phrases = [p for language in LANGUAGES for p in entry.get(language, [])]
            if not phrases:
                raise LexiconError(
                    "concepts", where, f"needs at least one phrase in {' or '.join(LANGUAGES)}"
                )
            for phrase in phrases:
                add("concepts", where, phrase, ("term", ident))
            if kind == "concept":
                rules[ident] = _concept_rule(ident, entry, where)
            elif kind == "qualifier":
                value = entry.get("alone")
                if value is not None:
                    _check_severity(value, where, "alone")
                alone[ident] = value
    # Qualifiers named by a concept must exist.
    for rule in rules.values():
        for q in rule.escalate | rule.persist | rule.calm:
            if term_kinds.get(q) != "qualifier":
                raise LexiconError("concepts", f"[concepts.{rule.id}]", f"{q!r} is not a qualifier")
    return term_kinds, rules, alone


def _concept_rule(ident: str, entry: Mapping[str, Any], where: str) -> ConceptRule:
    severity = entry.get("severity")
    _check_severity(severity, where, "severity")

    def day_rules(raw: Any, label: str) -> tuple[tuple[int, str], ...]:
        if not isinstance(raw, list) or not raw:
            raise LexiconError("concepts", where, f"{label} must be a non-empty list")
        out: list[tuple[int, str]] = []
        for item in raw:
            if not isinstance(item, Mapping) or set(item) != {"from_day", "severity"}:
                raise LexiconError(
                    "concepts", where, f"{label}: each rule is {{from_day = N, severity = ...}}"
                )
            from_day = item["from_day"]
            if isinstance(from_day, bool) or not isinstance(from_day, int) or from_day < 0:
                raise LexiconError("concepts", where, f"{label}: from_day must be a whole number ≥ 0")
            _check_severity(item["severity"], where, label)
            out.append((from_day, item["severity"]))
        if [d for d, _ in out] != sorted({d for d, _ in out}) or out[0][0] != 0:
            raise LexiconError("concepts", where, f"{label}: from_day must start at 0 and rise")
        return tuple(out)

    rules = day_rules(entry["day_rules"], "day_rules") if "day_rules" in entry else ()
    by_treatment = {
        treatment: day_rules(raw.get("day_rules"), f"by_treatment.{treatment}.day_rules")
        for treatment, raw in entry.get("by_treatment", {}).items()
    }
    for key in ("unknown_day", "escalate_to", "calm_to"):
        if key in entry:
            _check_severity(entry[key], where, key)
    return ConceptRule(
        id=ident,
        severity=severity,
        day_rules=rules,
        unknown_day=entry.get("unknown_day"),
        by_treatment=by_treatment,
        escalate=frozenset(entry.get("escalate", [])),
        escalate_to=entry.get("escalate_to", "urgent"),
        persist=frozenset(entry.get("persist", [])),
        persist_from_day=int(entry.get("persist_from_day", 3)),
        calm=frozenset(entry.get("calm", [])),
        calm_to=entry.get("calm_to", "routine"),
        defer=bool(entry.get("defer", False)),
        sign=bool(entry.get("sign", True)),
    )


def _word_set(words: list[str] | None, word_map: Mapping[str, tuple[str, ...]]) -> frozenset[str] | None:
    if words is None:
        return None
    return frozenset(w for phrase in words for w in _normalise_phrase(phrase, word_map))


def _build_combinations(
    concepts: Mapping[str, Any], term_kinds: Mapping[str, str], word_map: Mapping[str, tuple[str, ...]]
) -> tuple[Combination, ...]:
    combos: list[Combination] = []
    known = set(term_kinds)
    concept_ids = {ident for ident, kind in term_kinds.items() if kind == "concept"}
    for index, entry in enumerate(concepts.get("combinations", [])):
        where = f"[[combinations]] #{index + 1} ({entry.get('concept', '?')})"
        concept = entry.get("concept")
        if not isinstance(concept, str) or not concept:
            raise LexiconError("concepts", where, "needs a concept name")
        if entry.get("severity") == FROM_CONCEPT:
            if concept not in concept_ids:
                raise LexiconError(
                    "concepts", where, f"severity = {FROM_CONCEPT!r} needs {concept!r} under [concepts]"
                )
        else:
            _check_severity(entry.get("severity"), where, "severity")
        scope = entry.get("scope", "clause")
        if scope not in SCOPES:
            raise LexiconError("concepts", where, f"scope must be one of {SCOPES}")
        groups = entry.get("all_of")
        if not isinstance(groups, list) or len(groups) < 2:
            raise LexiconError("concepts", where, "all_of needs at least two groups")
        for group in groups:
            for ident in group:
                if ident not in known:
                    raise LexiconError("concepts", where, f"{ident!r} is not a concept, qualifier or cue")
        max_gap = entry.get("max_gap")
        if max_gap is not None and (isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 0):
            raise LexiconError("concepts", where, "max_gap must be a whole number ≥ 0")
        gaps = {key: entry.get(key) for key in ("gap_words", "gap_words_reverse")}
        for key, words in gaps.items():
            if words is not None and (
                not isinstance(words, list) or not all(isinstance(w, str) for w in words)
            ):
                raise LexiconError("concepts", where, f"{key} must be a list of words")
        stops = entry.get("gap_stops", [])
        if not isinstance(stops, list) or not all(isinstance(w, str) and w.strip() for w in stops):
            raise LexiconError("concepts", where, "gap_stops must be a list of phrases")
        if (max_gap is not None or gaps["gap_words"] is not None or stops) and len(groups) != 2:
            raise LexiconError("concepts", where, "max_gap, gap_stops and gap_words apply to two groups only")
        combos.append(
            Combination(
                concept,
                entry["severity"],
                scope,
                tuple(frozenset(g) for g in groups),
                max_gap=max_gap,
                gap_words=_word_set(gaps["gap_words"], word_map),
                gap_words_reverse=_word_set(gaps["gap_words_reverse"], word_map),
                gap_stops=tuple(_normalise_phrase(stop, word_map) for stop in stops),
            )
        )
        known.add(concept)  # later combinations may use it
    return tuple(combos)


def _build_modifiers(
    modifiers: Mapping[str, Any], add: _Add
) -> tuple[dict[str, ModifierCategory], frozenset[str], frozenset[str], frozenset[str]]:
    categories: dict[str, ModifierCategory] = {}
    for name, entry in modifiers.get("categories", {}).items():
        where = f"[categories.{name}]"
        flags = tuple(entry.get("flags", []))
        if not flags or any(f not in FLAGS for f in flags):
            raise LexiconError("modifiers", where, f"flags must be a non-empty subset of {FLAGS}")
        max_scope = entry.get("max_scope")
        if isinstance(max_scope, bool) or not isinstance(max_scope, int) or max_scope < 1:
            raise LexiconError("modifiers", where, "max_scope must be a whole number ≥ 1")
        for direction in ("forward", "backward"):
            for phrase in entry.get(direction, []):
                add("modifiers", where, phrase, ("trigger", f"{name}:{direction}"))
        terminators = entry.get("terminators", [])
        for group in terminators:
            if group not in modifiers.get("terminators", {}):
                raise LexiconError(
                    "modifiers", where, f"terminator group {group!r} is not under [terminators]"
                )
        flags_ok = {
            key: entry.get(key, default)
            for key, default in (
                ("commas_end_scope", True),
                ("doubles_cancel", False),
                ("clears", False),
                ("past_runs_on", False),
                ("reaches_previous_sentence", False),
            )
        }
        for key, value in flags_ok.items():
            if not isinstance(value, bool):
                raise LexiconError("modifiers", where, f"{key} must be true or false")
        categories[name] = ModifierCategory(name, flags, max_scope, frozenset(terminators), **flags_ok)
    for group, phrases in modifiers.get("terminators", {}).items():
        for phrase in phrases:
            add("modifiers", f"[terminators] {group}", phrase, ("terminator", group))
    for phrase in modifiers.get("pseudo", {}).get("phrases", []):
        add("modifiers", "[pseudo]", phrase, ("pseudo", ""))
    for phrase in modifiers.get("clauses", {}).get("breaks", []):
        add("modifiers", "[clauses] breaks", phrase, ("clause", ""))
    punctuation = modifiers.get("punctuation", {})
    sentence_ends = frozenset(punctuation.get("sentence_ends", [".", "!", "?", ";", "\n"])) | {"\n"}
    list_separators = frozenset(punctuation.get("list_separators", [","]))
    connectors = frozenset(_fold(w) for w in modifiers.get("lists", {}).get("connectors", []))
    return categories, sentence_ends, list_separators, connectors


def _build_tense(
    modifiers: Mapping[str, Any], word_map: Mapping[str, tuple[str, ...]]
) -> tuple[frozenset[str], frozenset[str]]:
    """The words that mark a clause as told in the past or in the present (one word each)."""
    tense = modifiers.get("tense", {})
    out: list[frozenset[str]] = []
    for key in ("past", "present"):
        words: set[str] = set()
        for phrase in tense.get(key, []):
            normalised = _normalise_phrase(phrase, word_map)
            if len(normalised) != 1:
                raise LexiconError("modifiers", f"[tense] {key}", f"{phrase!r} must be one word")
            words.update(normalised)
        out.append(frozenset(words))
    return out[0], out[1]


def _build_keywords(
    keywords: Mapping[str, Any], section: str, add: _Add, word_map: Mapping[str, tuple[str, ...]]
) -> frozenset[tuple[str, ...]]:
    table = keywords.get(section, {})
    kind = section.replace("_", "")  # "optout" / "optin"
    for language in LANGUAGES:
        for phrase in table.get(language, []):
            add("keywords", f"[{section}] {language}", phrase, (kind, section))
    alone: set[tuple[str, ...]] = set()
    for phrase in table.get("alone", []):
        words = tuple(w for w in _normalise_phrase(phrase, word_map) if w[0].isalnum())
        if not words:
            raise LexiconError("keywords", f"[{section}] alone", f"phrase {phrase!r} has no words")
        alone.add(words)
    return frozenset(alone)


def _build_day_patterns(
    normalise: Mapping[str, Any], word_map: Mapping[str, tuple[str, ...]]
) -> tuple[tuple[tuple[str, ...], int], ...]:
    patterns: list[tuple[tuple[str, ...], int]] = []
    for phrase in normalise.get("day_mentions", {}).get("patterns", []):
        words = _normalise_phrase(phrase, word_map)
        if words.count(_SLOT) != 1:
            raise LexiconError("normalise", f"[day_mentions] {phrase!r}", "needs exactly one {n}")
        patterns.append((words, words.index(_SLOT)))
    return tuple(patterns)


def _build_fuzzy(
    fuzzy: Mapping[str, Any], vocabulary: frozenset[str], word_map: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """One-letter typos of the key symptom words ("swolen", "feaver", "blistres"), generated once.

    A variant that is a real word we know (in the lexicon, or listed as protected, e.g. "never" next to
    "fever") is never corrected, and a variant two targets share is dropped as ambiguous.
    """
    protected = {_fold(w) for w in fuzzy.get("protected", [])} | vocabulary | set(word_map)
    owner: dict[str, str | None] = {}
    for target in fuzzy.get("words", []):
        word = _fold(target)
        for variant in _typos(word):
            if variant == word or variant in protected:
                continue
            owner[variant] = word if owner.get(variant, word) == word else None
    return {variant: (word,) for variant, word in owner.items() if word is not None}


def _typos(word: str) -> Iterable[str]:
    vowels = "aeiouy"
    for i in range(len(word)):
        if len(word) >= 6:
            yield word[:i] + word[i + 1 :]  # a letter dropped
        yield word[:i] + word[i] + word[i:]  # a letter doubled
        if i + 1 < len(word):
            yield word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # two letters swapped
        for v in vowels:
            if word[i] in vowels:
                yield word[:i] + v + word[i + 1 :]  # a vowel changed
            yield word[:i] + v + word[i:]  # a vowel added


def _check_severity(value: Any, where: str, key: str) -> None:
    if value not in _RANK:
        raise LexiconError("concepts", where, f"{key} must be one of {SEVERITIES}, got {value!r}")
