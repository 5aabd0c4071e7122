"""The one schema of the triage data files — pure: validates parsed TOML, reads nothing.

Every shape, type, allowed value and cross-reference of ``templates/triage/`` is checked here, with
pydantic models, before anything is compiled: a mistake is reported with the file and the entry named
(``concepts.toml: [concepts.pus]: severity: Input should be ...``) instead of showing up later as a symptom
that silently stops paging anyone. The compiler (``lexicon``) then only checks what needs the compiled
word tables (a phrase that normalises to nothing).

    vocabulary/concepts.toml   clinician vocabulary: concepts, qualifiers, cues, combinations
    vocabulary/keywords.toml   plain-language opt-out and opt-in phrases
    vocabulary/red_flags.toml  clinician vocabulary: the emergency screen (red flags), which only raises
    engine/modifiers.toml      engine tuning: negation, hypothetical, historical triggers and scopes
    engine/normalise.toml      engine tuning: shorthand, misspellings, emoji, numbers, quoted text, typos
    engine/languages.toml      engine tuning: common words of the languages we read, and when we do not
    engine/classifier.toml     engine tuning: the learned second opinion (on or off, its thresholds);
                               its weights are engine/classifier.json, written by
                               bench/train_triage_classifier.py and checked here too
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from service.core.enums import RiskFlag, Severity

# The languages the lexicons read: a message mostly in another one is routine with a finding saying so
# (engine/languages.toml). Phrases may also be given in other languages (thanks, tapbacks, greetings in
# the languages of US clinics' patients), under these codes, without the engine claiming to read them.
COVERED_LANGUAGES: tuple[str, ...] = ("en", "es", "pt")
OTHER_LANGUAGES: tuple[str, ...] = (
    "fr", "ht", "tl", "vi", "zh", "ko", "ru", "uk", "ar", "fa", "de", "it", "pl", "ja", "hi",
)  # fmt: skip
LANGUAGES: tuple[str, ...] = COVERED_LANGUAGES + OTHER_LANGUAGES
# A combination member naming an intake risk flag (docs/triage-labelling.md "risk_flags"): "risk:eczema".
RISK_PREFIX = "risk:"
RISK_MEMBERS: frozenset[str] = frozenset(RISK_PREFIX + flag.value for flag in RiskFlag)
FLAGS: tuple[str, ...] = ("negated", "hypothetical", "historical")
SCOPES: tuple[str, ...] = ("clause", "sentence", "message")
# A combination whose severity is this takes the day rules of the concept it makes.
FROM_CONCEPT = "from_concept"
SLOT = "{n}"  # "any number" in a phrase or a day pattern


class LexiconError(ValueError):
    """A mistake in the triage data, naming the file (without ``.toml``) and the entry."""

    def __init__(self, file: str, entry: str, message: str) -> None:
        super().__init__(f"{file if '.' in file else file + '.toml'}: {entry}: {message}")
        self.file = file
        self.entry = entry
        self.message = message


Phrase = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]
Phrases = list[Phrase]
SeverityName = Literal["none", "routine", "urgent", "emergency"]
Day = Annotated[int, Field(ge=0, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Languages(_Strict):
    en: Phrases = []
    es: Phrases = []
    pt: Phrases = []
    fr: Phrases = []
    ht: Phrases = []
    tl: Phrases = []
    vi: Phrases = []
    zh: Phrases = []
    ko: Phrases = []
    ru: Phrases = []
    uk: Phrases = []
    ar: Phrases = []
    fa: Phrases = []
    de: Phrases = []
    it: Phrases = []
    pl: Phrases = []
    ja: Phrases = []
    hi: Phrases = []

    def phrases(self) -> list[str]:
        return [phrase for language in LANGUAGES for phrase in getattr(self, language)]


class _Phrased(_Languages):
    @model_validator(mode="after")
    def _has_a_phrase(self) -> _Phrased:
        if not any(getattr(self, language) for language in LANGUAGES):
            raise ValueError(f"needs at least one phrase in {' or '.join(LANGUAGES)}")
        return self


class DayRule(_Strict):
    from_day: Day
    severity: SeverityName


def _rising(rules: list[DayRule] | None) -> list[DayRule] | None:
    if rules is None:
        return None
    if not rules:
        raise ValueError("must be a non-empty list")
    days = [rule.from_day for rule in rules]
    if days[0] != 0 or days != sorted(set(days)):
        raise ValueError("from_day must start at 0 and rise")
    return rules


class ByTreatment(_Strict):
    day_rules: list[DayRule]

    _rising = field_validator("day_rules")(_rising)


class Concept(_Phrased):
    severity: SeverityName
    day_rules: list[DayRule] | None = None
    unknown_day: SeverityName | None = None
    by_treatment: dict[str, ByTreatment] = {}
    escalate: list[str] = []
    escalate_to: SeverityName = "urgent"
    persist: list[str] = []
    persist_from_day: Day = 3
    calm: list[str] = []
    calm_to: SeverityName = "routine"
    defer: bool = False
    sign: bool = True

    _rising = field_validator("day_rules")(_rising)


class Qualifier(_Phrased):
    alone: SeverityName | None = None


class Cue(_Phrased):
    pass


class Combination(_Strict):
    concept: Phrase
    severity: SeverityName | Literal["from_concept"]
    scope: Literal["clause", "sentence", "message"] = "clause"
    all_of: Annotated[list[Annotated[list[str], Field(min_length=1)]], Field(min_length=2)]
    max_gap: Day | None = None
    gap_words: list[str] | None = None
    gap_words_reverse: list[str] | None = None
    gap_stops: Phrases = []

    @model_validator(mode="after")
    def _proximity_for_pairs(self) -> Combination:
        proximity = self.max_gap is not None or self.gap_words is not None or self.gap_stops
        if proximity and len(self.all_of) != 2:
            raise ValueError("max_gap, gap_stops and gap_words apply to two groups only")
        return self


class Category(_Strict):
    flags: Annotated[list[Literal["negated", "hypothetical", "historical"]], Field(min_length=1)]
    max_scope: Annotated[int, Field(ge=1, strict=True)]
    terminators: list[str] = []
    forward: Phrases = []
    backward: Phrases = []
    commas_end_scope: bool = True
    doubles_cancel: bool = False
    clears: bool = False
    past_runs_on: bool = False
    reaches_previous_sentence: bool = False


class _Phrases(_Strict):
    phrases: Phrases = []


class _Breaks(_Strict):
    breaks: Phrases = []


class _Connectors(_Strict):
    connectors: Phrases = []


class _Questions(_Strict):
    marks: Phrases = ["?"]
    none_becomes: SeverityName = "routine"


Mark = Annotated[str, StringConstraints(min_length=1)]  # punctuation, where a line break counts


class _Punctuation(_Strict):
    sentence_ends: list[Mark] = [".", "!", "?", ";", "\n"]
    list_separators: list[Mark] = [","]


class _Tense(_Strict):
    past: Phrases = []
    present: Phrases = []


class ModifiersFile(_Strict):
    categories: dict[str, Category] = {}
    terminators: dict[str, Phrases] = {}
    pseudo: _Phrases = _Phrases()
    clauses: _Breaks = _Breaks()
    lists: _Connectors = _Connectors()
    questions: _Questions = _Questions()
    punctuation: _Punctuation = _Punctuation()
    tense: _Tense = _Tense()


Bounds = Annotated[list[float], Field(min_length=2, max_length=2)]


class _HighTemperature(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)  # 38 and 38.0 alike
    word: Phrase = "hightemp"
    reading_word: str = ""
    celsius: Bounds = [38.0, 43.0]
    fahrenheit: Bounds = [100.4, 108.0]


class _FastPulse(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
    word: str = ""
    range: Bounds = [0.0, 0.0]


class _Numbers(_Strict):
    high_temperature: _HighTemperature = _HighTemperature()
    fast_pulse: _FastPulse = _FastPulse()


class _DayMentions(_Strict):
    patterns: Phrases = []

    @field_validator("patterns")
    @classmethod
    def _one_slot(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if pattern.count(SLOT) != 1:
                raise ValueError(f"{pattern!r} needs exactly one {SLOT}")
        return patterns


def _compiles(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid pattern: {exc}") from exc
    return patterns


class _Quoted(_Strict):
    line_prefixes: Phrases = [">"]
    headers: Phrases = []
    # Tapbacks ("Liked “…”"): each match becomes tapback_word, which a concept reads as a reaction.
    tapbacks: Phrases = []
    tapback_word: Phrase = "tapback"
    # A name signed under a sign-off: dropped, the sign-off (group 1) kept.
    sign_off_names: Phrases = []

    _patterns = field_validator("headers", "tapbacks", "sign_off_names")(_compiles)


class _Signatures(_Strict):
    # A trailing signature ("- Maria", "Sent from my iPhone", a phone number), ignored when judging
    # whether a request stands alone.
    patterns: Phrases = []

    _patterns = field_validator("patterns")(_compiles)


class _Fuzzy(_Strict):
    words: Phrases = []
    protected: Phrases = []


class NormaliseFile(_Strict):
    shorthand: dict[str, Phrase] = {}
    spelling: dict[str, Phrase] = {}
    emoji: dict[str, Phrase] = {}
    number_words: dict[str, Phrase] = {}
    day_mentions: _DayMentions = _DayMentions()
    numbers: _Numbers = _Numbers()
    quoted: _Quoted = _Quoted()
    signatures: _Signatures = _Signatures()
    fuzzy: _Fuzzy = _Fuzzy()


class _Requests(_Languages):
    alone: Phrases = []


class _Courtesy(_Strict):
    # Concepts and words that do not stop a request from standing alone: "pls stop 🙏", "ok STOP thanks".
    concepts: list[str] = []
    words: Phrases = []


class KeywordsFile(_Strict):
    opt_out: _Requests = _Requests()
    opt_in: _Requests = _Requests()
    courtesy: _Courtesy = _Courtesy()


# ---- vocabulary/red_flags.toml ------------------------------------------------------------------------

# A word ending in "*" in a red-flag phrase is a stem: "desmay*" is desmayé, desmayo, desmayada, desmayarme.
_STEM = re.compile(r"^[^\W\d_]{3,}\*$")
RaisedSeverity = Literal["urgent", "emergency"]


def _stems_well_formed(phrases: list[str]) -> list[str]:
    for phrase in phrases:
        for word in phrase.split():
            if "*" in word and not _STEM.match(word):
                raise ValueError(
                    f"{phrase!r}: a stem is three or more letters then '*' (\"desmay*\"), got {word!r}"
                )
    return phrases


class RedFlagGroup(_Phrased):
    """Words that play one part in a red flag ("lips", "blue or grey"), in any language."""

    _stems = field_validator(*LANGUAGES)(_stems_well_formed)


class RedFlagRule(_Strict):
    """One present member of every group (or intake risk flag, "risk:blood_thinners") within the scope."""

    all_of: Annotated[list[Phrase], Field(min_length=2)]
    scope: Literal["clause", "sentence", "message"] = "clause"
    max_gap: Day | None = None
    gap_stops: Phrases = []
    in_order: bool = False  # the first group's word comes first ("so dizzy", not "dizzy, so I sat")

    @model_validator(mode="after")
    def _proximity_for_pairs(self) -> RedFlagRule:
        in_text = [m for m in self.all_of if not m.startswith(RISK_PREFIX)]
        if (self.max_gap is not None or self.gap_stops or self.in_order) and len(in_text) != 2:
            raise ValueError("max_gap, gap_stops and in_order apply to two groups only")
        if not in_text:
            raise ValueError("needs at least one group of words (risk flags alone are not in the text)")
        return self


class RedFlag(_Languages):
    """A sign that always means at least its severity, whatever the rest of the message says. Its phrases
    may be in any language: an emergency said in French is still one, though we do not read French."""

    concept: Phrase
    severity: RaisedSeverity = "emergency"
    basis: Phrase  # where docs/clinical-basis.md states it
    when: list[RedFlagRule] = []

    _stems = field_validator(*LANGUAGES)(_stems_well_formed)

    @model_validator(mode="after")
    def _has_a_way_in(self) -> RedFlag:
        if not (self.phrases() or self.when):
            raise ValueError("needs phrases (en, es, pt, …) or at least one rule under 'when'")
        return self


class _Typos(_Strict):
    min_length: Annotated[int, Field(ge=3, strict=True)] = 5
    two_edits_from: Annotated[int, Field(ge=4, strict=True)] = 9
    protected: Phrases = []


class RedFlagsFile(_Strict):
    typos: _Typos = _Typos()
    groups: dict[str, RedFlagGroup] = {}
    flags: dict[str, RedFlag] = {}


def validate_red_flags(raw: Mapping[str, Any]) -> RedFlagsFile:
    _tables("red_flags", raw, set(RedFlagsFile.model_fields))
    for name, entry in raw.get("groups", {}).items():
        _entry("red_flags", f"[groups.{name}]", RedFlagGroup, entry)
    flags = {}
    for name, entry in raw.get("flags", {}).items():
        flags[name] = _entry("red_flags", f"[flags.{name}]", RedFlag, entry)
    parsed = _entry("red_flags", "top level", RedFlagsFile, raw)
    for name, flag in flags.items():
        for index, rule in enumerate(flag.when):
            where = f"[flags.{name}] when #{index + 1}"
            for member in rule.all_of:
                if member.startswith(RISK_PREFIX):
                    _check_risk_member("red_flags", where, member, "message")
                elif member not in parsed.groups:
                    raise LexiconError("red_flags", where, f"{member!r} is not under [groups]")
    return parsed


# ---- engine/languages.toml -------------------------------------------------------------------------


class _Understood(_Strict):
    en: Phrases = []
    es: Phrases = []
    pt: Phrases = []


class _NotUnderstood(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)  # 0.5 and 1 alike
    concept: Phrase = "language_not_understood"
    severity: SeverityName = "routine"
    min_words: Annotated[int, Field(ge=1)] = 2
    share: Annotated[float, Field(gt=0, le=1)] = 0.5
    typo_from_length: Annotated[int, Field(ge=3)] = 4


class LanguagesFile(_Strict):
    understood: _Understood = _Understood()
    courtesy: Phrases = []
    not_understood: _NotUnderstood = _NotUnderstood()


def validate_languages(raw: Mapping[str, Any]) -> LanguagesFile:
    _tables("languages", raw, set(LanguagesFile.model_fields))
    return _entry("languages", "top level", LanguagesFile, raw)


# ---- engine/classifier.toml and engine/classifier.json -----------------------------------------------

CLASSIFIER_FORMAT = "aftercare-triage-classifier/1"
CLASSIFIER_CLASSES = ("emergency", "urgent", "low")


class ClassifierSettings(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
    enabled: bool = False
    # Speak only when the rules and the screen recognised no clinical finding at all (present, denied,
    # supposed or past): where they read a finding they also read its context, which n-grams cannot.
    only_when_nothing_recognised: bool = True
    # The highest severity it may raise to.
    highest: RaisedSeverity = "urgent"
    concept: Phrase = "second_opinion"
    # Probabilities at or above which the second opinion raises; None: the thresholds chosen in training.
    urgent_at: Annotated[float, Field(gt=0, le=1)] | None = None
    emergency_at: Annotated[float, Field(gt=0, le=1)] | None = None


class _ClassifierThresholds(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
    urgent: Annotated[float, Field(gt=0, le=1)]
    emergency: Annotated[float, Field(gt=0, le=1)]


class _ClassifierHeader(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True, strict=False)
    format: Literal["aftercare-triage-classifier/1"]
    classes: list[str]
    features: dict[str, Any]
    bias: list[float]
    thresholds: _ClassifierThresholds

    @field_validator("classes")
    @classmethod
    def _classes(cls, classes: list[str]) -> list[str]:
        if tuple(classes) != CLASSIFIER_CLASSES:
            raise ValueError(f"must be {list(CLASSIFIER_CLASSES)}")
        return classes


def validate_classifier(settings: Mapping[str, Any], weights: Mapping[str, Any]) -> ClassifierSettings:
    """The settings, and the shape of the weights (checked by hand: tens of thousands of entries)."""
    parsed = _entry("classifier", "top level", ClassifierSettings, settings)
    if not isinstance(weights, Mapping):
        raise LexiconError("classifier.json", "top level", "must be a JSON object")
    header = {key: value for key, value in weights.items() if key != "weights"}
    try:
        _ClassifierHeader.model_validate(header)
    except ValidationError as exc:
        raise LexiconError("classifier.json", "top level", _message(exc, _ClassifierHeader)) from exc
    table = weights.get("weights")
    if not isinstance(table, Mapping) or not table:
        raise LexiconError("classifier.json", "weights", "must be a non-empty object")
    width = len(CLASSIFIER_CLASSES)
    if len(weights["bias"]) != width:
        raise LexiconError("classifier.json", "bias", f"needs {width} numbers")
    for feature, row in table.items():
        if not (isinstance(row, list) and len(row) == width and all(isinstance(v, int | float) for v in row)):
            raise LexiconError("classifier.json", f"weights[{feature!r}]", f"needs {width} numbers")
    return parsed


# ---- validation -------------------------------------------------------------------------------------


def _message(error: ValidationError, model: type[BaseModel]) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}; allowed: {sorted(model.model_fields)}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


Parsed = TypeVar("Parsed", bound=BaseModel)


def _entry(file: str, where: str, model: type[Parsed], raw: Any) -> Parsed:
    if not isinstance(raw, Mapping):
        raise LexiconError(file, where, "must be a table")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise LexiconError(file, where, _message(exc, model)) from exc


def _tables(file: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise LexiconError(
            file, "top level", f"unknown table(s) {sorted(unknown)}; expected some of {sorted(allowed)}"
        )


def _check_risk_member(file: str, where: str, ident: str, scope: str) -> None:
    """ "risk:eczema" names an intake flag (service.core.enums.RiskFlag); it has no place in the text, so
    a combination using one looks at the whole message."""
    if ident not in RISK_MEMBERS:
        allowed = ", ".join(sorted(RISK_MEMBERS))
        raise LexiconError(file, where, f"{ident!r} is not a risk flag; allowed: {allowed}")
    if scope != "message":
        raise LexiconError(file, where, f"{ident!r} needs scope = 'message' (a risk flag is not in the text)")


def validate(
    *,
    concepts: Mapping[str, Any],
    modifiers: Mapping[str, Any],
    normalise: Mapping[str, Any],
    keywords: Mapping[str, Any],
) -> None:
    """Check the four parsed files. Raises LexiconError naming the file and the entry."""
    _tables("concepts", concepts, {"concepts", "qualifiers", "cues", "combinations"})
    kinds: dict[str, str] = {}
    parsed_concepts: dict[str, Concept] = {}
    for section, model in (("concepts", Concept), ("qualifiers", Qualifier), ("cues", Cue)):
        for ident, raw in concepts.get(section, {}).items():
            where = f"[{section}.{ident}]"
            entry = _entry("concepts", where, model, raw)
            if ident in kinds:
                raise LexiconError("concepts", where, f"the id {ident!r} is already a {kinds[ident]}")
            kinds[ident] = section
            if isinstance(entry, Concept):
                parsed_concepts[ident] = entry
    for ident, rule in parsed_concepts.items():
        for qualifier in (*rule.escalate, *rule.persist, *rule.calm):
            if kinds.get(qualifier) != "qualifiers":
                raise LexiconError("concepts", f"[concepts.{ident}]", f"{qualifier!r} is not a qualifier")
    known = set(kinds)
    for index, raw in enumerate(concepts.get("combinations", [])):
        name = raw.get("concept", "?") if isinstance(raw, Mapping) else "?"
        where = f"[[combinations]] #{index + 1} ({name})"
        combo = _entry("concepts", where, Combination, raw)
        if combo.severity == FROM_CONCEPT and combo.concept not in parsed_concepts:
            raise LexiconError(
                "concepts", where, f"severity = {FROM_CONCEPT!r} needs {combo.concept!r} under [concepts]"
            )
        for group in combo.all_of:
            for ident in group:
                if ident.startswith(RISK_PREFIX):
                    _check_risk_member("concepts", where, ident, combo.scope)
                elif ident not in known:
                    raise LexiconError("concepts", where, f"{ident!r} is not a concept, qualifier or cue")
        risky = [g for g in combo.all_of if any(i.startswith(RISK_PREFIX) for i in g)]
        if risky:
            if any(not all(i.startswith(RISK_PREFIX) for i in g) for g in risky):
                raise LexiconError("concepts", where, "a group of risk flags holds risk flags only")
            if len(risky) == len(combo.all_of):
                raise LexiconError(
                    "concepts", where, "needs a group of concepts (risk flags are not in the text)"
                )
            if combo.max_gap is not None or combo.gap_stops or combo.gap_words or combo.gap_words_reverse:
                raise LexiconError(
                    "concepts", where, "risk flags have no place in the text: no max_gap or gap_*"
                )
        known.add(combo.concept)  # later combinations may use it

    parsed_modifiers = _entry(
        "modifiers",
        "top level",
        ModifiersFile,
        {key: value for key, value in modifiers.items() if key != "categories"},
    )
    _tables("modifiers", modifiers, set(ModifiersFile.model_fields))
    for name, raw in modifiers.get("categories", {}).items():
        category = _entry("modifiers", f"[categories.{name}]", Category, raw)
        for terminator in category.terminators:
            if terminator not in parsed_modifiers.terminators:
                raise LexiconError(
                    "modifiers",
                    f"[categories.{name}]",
                    f"terminator group {terminator!r} is not under [terminators]",
                )

    _tables("normalise", normalise, set(NormaliseFile.model_fields))
    _entry("normalise", "top level", NormaliseFile, normalise)
    _tables("keywords", keywords, set(KeywordsFile.model_fields))
    parsed_keywords = _entry("keywords", "top level", KeywordsFile, keywords)
    for ident in parsed_keywords.courtesy.concepts:
        if ident not in parsed_concepts:
            raise LexiconError(
                "keywords", "[courtesy]", f"{ident!r} is not under [concepts] in concepts.toml"
            )


SEVERITIES: tuple[str, ...] = tuple(Severity)
