"""The compiled triage lexicon — pure: no I/O. Built once from the data files, then only read.

Clinician vocabulary lives in ``templates/triage/vocabulary/`` (concepts with their phrases, severities,
day rules and combinations; plain-language opt-out and opt-in phrases); engine tuning lives in
``templates/triage/engine/`` (negation and other modifiers with their scopes; shorthand, misspellings,
emoji, numbers, quoted text). ``service.triage.schema`` validates the parsed files; ``compile_lexicon``
turns them into the tables of the three steps: the normaliser (``normalise``), the phrase trie
(``match``) and the rules that decide (``decide``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.triage import schema
from service.triage.classifier import Classifier, compile_classifier
from service.triage.keywords import COMPLIANCE_KEYWORDS
from service.triage.language import LanguageCheck, compile_language_check
from service.triage.match import Match, PhraseTrie
from service.triage.normalise import (
    Normaliser,
    Token,
    build_normaliser,
    build_word_map,
    expand_alternatives,
    fold,
    normalise_phrase,
)
from service.triage.red_flags import RedFlagScreen, compile_red_flags
from service.triage.schema import COVERED_LANGUAGES, LANGUAGES, LexiconError


@dataclass(frozen=True, slots=True)
class ConceptRule:
    """How one concept's severity is decided (``templates/triage/vocabulary/concepts.toml``).

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

    def close_enough(self, first: Hit, second: Hit, norms: Sequence[str], members: Sequence[int]) -> bool:
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


# Built by service.triage.decide; defined here because Combination.close_enough measures the gap between two.
@dataclass(slots=True)
class Hit:
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


@dataclass(frozen=True, eq=False)
class Lexicon:
    """Everything triage needs, compiled once from the four data files (``compile_lexicon``)."""

    normaliser: Normaliser
    trie: PhraseTrie
    term_kinds: Mapping[str, str]
    concepts: Mapping[str, ConceptRule]
    qualifier_alone: Mapping[str, str | None]
    combinations: tuple[Combination, ...]
    categories: Mapping[str, ModifierCategory]
    sentence_ends: frozenset[str]
    list_separators: frozenset[str]
    connectors: frozenset[str]
    past_words: frozenset[str]
    present_words: frozenset[str]
    optout_alone: frozenset[tuple[str, ...]]
    optin_alone: frozenset[tuple[str, ...]]
    question_marks: frozenset[str]
    question_floor: str
    red_flags: RedFlagScreen
    language: LanguageCheck
    classifier: Classifier
    courtesy_concepts: frozenset[str]
    courtesy_words: frozenset[str]
    # Every word that can make a request stand alone (carrier keywords, the "alone" phrases' words).
    alone_words: frozenset[str] = frozenset()

    def __repr__(self) -> str:  # the tables run to thousands of entries
        forms = len(self.normaliser.word_map)
        return f"Lexicon({len(self.concepts)} concepts, {len(self.term_kinds)} terms, {forms} word forms)"

    # Steps 1 and 2, as triage calls them.
    def strip_quoted(self, text: str) -> str:
        return self.normaliser.strip_quoted(text)

    def strip_signature(self, text: str) -> str:
        return self.normaliser.strip_signature(text)

    def tokenise(self, text: str) -> list[Token]:
        return self.normaliser.tokenise(text)

    def day_from_text(self, tokens: Sequence[Token]) -> int | None:
        return self.normaliser.day_from_text(tokens)

    def match(self, tokens: Sequence[Token]) -> list[Match]:
        return self.trie.match(tokens)


class _Phrases:
    """Collects every phrase into the trie, normalised as a message will be."""

    def __init__(self, word_map: Mapping[str, tuple[str, ...]]) -> None:
        self.word_map = word_map
        self.trie = PhraseTrie()
        self.words: set[str] = set()
        # Words of phrases in the languages we read, and of those in others (thanks, tapbacks).
        self.covered_words: set[str] = set()
        self.other_words: set[str] = set()

    def add(
        self, file: str, entry: str, phrase: str, payload: tuple[str, str], language: str | None = "en"
    ) -> None:
        """``language``: that of the phrase; None for one whose words say nothing of the language of the
        message (an opt-out in Vietnamese is not a courtesy word, nor a word we read)."""
        try:
            variants = expand_alternatives(phrase)
        except ValueError as exc:
            raise LexiconError(file, entry, str(exc)) from exc
        for variant in variants:
            words = normalise_phrase(variant, self.word_map)
            if not words:
                raise LexiconError(file, entry, f"phrase {phrase!r} has no words after normalising")
            self.words.update(words)
            if language in COVERED_LANGUAGES:
                self.covered_words.update(words)
            elif language is not None:
                self.other_words.update(words)
            self.trie.add(words, payload)


def compile_lexicon(
    *,
    concepts: Mapping[str, Any],
    modifiers: Mapping[str, Any],
    normalise: Mapping[str, Any],
    keywords: Mapping[str, Any],
    red_flags: Mapping[str, Any],
    languages: Mapping[str, Any],
    classifier: Mapping[str, Any],
    classifier_weights: Mapping[str, Any],
) -> Lexicon:
    """Validate (``schema``) and compile the parsed files. Raises LexiconError naming file and entry."""
    schema.validate(concepts=concepts, modifiers=modifiers, normalise=normalise, keywords=keywords)
    word_map = build_word_map(normalise)
    phrases = _Phrases(word_map)
    term_kinds, concept_rules, qualifier_alone = _build_terms(concepts, phrases)
    combinations = _build_combinations(concepts, word_map)
    categories, sentence_ends, list_separators, connectors = _build_modifiers(modifiers, phrases)
    past_words, present_words = _build_tense(modifiers, word_map)
    courtesy = keywords.get("courtesy", {})
    courtesy_words = frozenset(
        w for phrase in courtesy.get("words", []) for w in normalise_phrase(phrase, word_map)
    )
    optout_alone = _build_keywords(keywords, "opt_out", phrases, word_map, courtesy_words)
    optin_alone = _build_keywords(keywords, "opt_in", phrases, word_map, courtesy_words)
    questions = modifiers.get("questions", {})
    phrases.trie.rank(
        lambda kind, ident: (
            concept_rules[ident].severity if kind == "term" and ident in concept_rules else None
        )
    )
    language = compile_language_check(languages, word_map, phrases.covered_words, phrases.other_words)
    screen = compile_red_flags(red_flags, word_map, phrases.words | language.understood | language.neutral)
    return Lexicon(
        normaliser=build_normaliser(normalise, word_map, phrases.words),
        trie=phrases.trie,
        term_kinds=term_kinds,
        concepts=concept_rules,
        qualifier_alone=qualifier_alone,
        combinations=combinations,
        categories=categories,
        sentence_ends=sentence_ends,
        list_separators=list_separators,
        connectors=connectors,
        past_words=past_words,
        present_words=present_words,
        optout_alone=optout_alone,
        optin_alone=optin_alone,
        question_marks=frozenset(questions.get("marks", ["?"])),
        question_floor=questions.get("none_becomes", "routine"),
        red_flags=screen,
        language=language,
        classifier=compile_classifier(classifier, classifier_weights),
        courtesy_concepts=frozenset(courtesy.get("concepts", [])),
        courtesy_words=courtesy_words,
        alone_words=frozenset(w for words in (*optout_alone, *optin_alone) for w in words)
        | {fold(word) for word in COMPLIANCE_KEYWORDS},
    )


def _build_terms(
    concepts: Mapping[str, Any], phrases: _Phrases
) -> tuple[dict[str, str], dict[str, ConceptRule], dict[str, str | None]]:
    term_kinds: dict[str, str] = {}
    rules: dict[str, ConceptRule] = {}
    alone: dict[str, str | None] = {}
    sections = {"concept": "concepts", "qualifier": "qualifiers", "cue": "cues"}
    for kind, section in sections.items():
        for ident, entry in concepts.get(section, {}).items():
            term_kinds[ident] = kind
            for language in LANGUAGES:
                for phrase in entry.get(language, []):
                    phrases.add("concepts", f"[{section}.{ident}]", phrase, ("term", ident), language)
            if kind == "concept":
                rules[ident] = _concept_rule(ident, entry)
            elif kind == "qualifier":
                alone[ident] = entry.get("alone")
    return term_kinds, rules, alone


def _day_rules(raw: Any) -> tuple[tuple[int, str], ...]:
    return tuple((item["from_day"], item["severity"]) for item in raw)


def _concept_rule(ident: str, entry: Mapping[str, Any]) -> ConceptRule:
    return ConceptRule(
        id=ident,
        severity=entry["severity"],
        day_rules=_day_rules(entry["day_rules"]) if "day_rules" in entry else (),
        unknown_day=entry.get("unknown_day"),
        by_treatment={t: _day_rules(raw["day_rules"]) for t, raw in entry.get("by_treatment", {}).items()},
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
    return frozenset(w for phrase in words for w in normalise_phrase(phrase, word_map))


def _build_combinations(
    concepts: Mapping[str, Any], word_map: Mapping[str, tuple[str, ...]]
) -> tuple[Combination, ...]:
    return tuple(
        Combination(
            entry["concept"],
            entry["severity"],
            entry.get("scope", "clause"),
            tuple(frozenset(g) for g in entry["all_of"]),
            max_gap=entry.get("max_gap"),
            gap_words=_word_set(entry.get("gap_words"), word_map),
            gap_words_reverse=_word_set(entry.get("gap_words_reverse"), word_map),
            gap_stops=tuple(normalise_phrase(stop, word_map) for stop in entry.get("gap_stops", [])),
        )
        for entry in concepts.get("combinations", [])
    )


def _build_modifiers(
    modifiers: Mapping[str, Any], phrases: _Phrases
) -> tuple[dict[str, ModifierCategory], frozenset[str], frozenset[str], frozenset[str]]:
    categories: dict[str, ModifierCategory] = {}
    for name, entry in modifiers.get("categories", {}).items():
        where = f"[categories.{name}]"
        for direction in ("forward", "backward"):
            for phrase in entry.get(direction, []):
                phrases.add("modifiers", where, phrase, ("trigger", f"{name}:{direction}"))
        categories[name] = ModifierCategory(
            name,
            tuple(entry["flags"]),
            entry["max_scope"],
            frozenset(entry.get("terminators", [])),
            commas_end_scope=entry.get("commas_end_scope", True),
            doubles_cancel=entry.get("doubles_cancel", False),
            clears=entry.get("clears", False),
            past_runs_on=entry.get("past_runs_on", False),
            reaches_previous_sentence=entry.get("reaches_previous_sentence", False),
        )
    for group, group_phrases in modifiers.get("terminators", {}).items():
        for phrase in group_phrases:
            phrases.add("modifiers", f"[terminators] {group}", phrase, ("terminator", group))
    for phrase in modifiers.get("pseudo", {}).get("phrases", []):
        phrases.add("modifiers", "[pseudo]", phrase, ("pseudo", ""))
    for phrase in modifiers.get("clauses", {}).get("breaks", []):
        phrases.add("modifiers", "[clauses] breaks", phrase, ("clause", ""))
    punctuation = modifiers.get("punctuation", {})
    sentence_ends = frozenset(punctuation.get("sentence_ends", [".", "!", "?", ";", "\n"])) | {"\n"}
    list_separators = frozenset(punctuation.get("list_separators", [","]))
    connectors = frozenset(fold(w) for w in modifiers.get("lists", {}).get("connectors", []))
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
            normalised = normalise_phrase(phrase, word_map)
            if len(normalised) != 1:
                raise LexiconError("modifiers", f"[tense] {key}", f"{phrase!r} must be one word")
            words.update(normalised)
        out.append(frozenset(words))
    return out[0], out[1]


def _build_keywords(
    keywords: Mapping[str, Any],
    section: str,
    phrases: _Phrases,
    word_map: Mapping[str, tuple[str, ...]],
    courtesy_words: frozenset[str] = frozenset(),
) -> frozenset[tuple[str, ...]]:
    table = keywords.get(section, {})
    kind = section.replace("_", "")  # "optout" / "optin"
    for language in LANGUAGES:
        for phrase in table.get(language, []):
            phrases.add(
                "keywords",
                f"[{section}] {language}",
                phrase,
                (kind, section),
                language if language in COVERED_LANGUAGES else None,
            )
    alone: set[tuple[str, ...]] = set()
    for phrase in table.get("alone", []):
        for variant in expand_alternatives(phrase):
            words = tuple(
                w for w in normalise_phrase(variant, word_map) if w[0].isalnum() and w not in courtesy_words
            )
            if not words:
                raise LexiconError("keywords", f"[{section}] alone", f"phrase {phrase!r} has no words")
            alone.add(words)
    return frozenset(alone)
