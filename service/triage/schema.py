"""The one schema of the triage data files — pure: validates parsed TOML, reads nothing.

Every shape, type, allowed value and cross-reference of ``templates/triage/`` is checked here, with
pydantic models, before anything is compiled: a mistake is reported with the file and the entry named
(``concepts.toml: [concepts.pus]: severity: Input should be ...``) instead of showing up later as a symptom
that silently stops paging anyone. The compiler (``lexicon``) then only checks what needs the compiled
word tables (a phrase that normalises to nothing).

    vocabulary/concepts.toml   clinician vocabulary: concepts, qualifiers, cues, combinations
    vocabulary/keywords.toml   plain-language opt-out and opt-in phrases
    engine/modifiers.toml      engine tuning: negation, hypothetical, historical triggers and scopes
    engine/normalise.toml      engine tuning: shorthand, misspellings, emoji, numbers, quoted text, typos
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from service.core.enums import Severity

LANGUAGES: tuple[str, ...] = ("en", "es", "pt")
FLAGS: tuple[str, ...] = ("negated", "hypothetical", "historical")
SCOPES: tuple[str, ...] = ("clause", "sentence", "message")
# A combination whose severity is this takes the day rules of the concept it makes.
FROM_CONCEPT = "from_concept"
SLOT = "{n}"  # "any number" in a phrase or a day pattern


class LexiconError(ValueError):
    """A mistake in the triage data, naming the file (without ``.toml``) and the entry."""

    def __init__(self, file: str, entry: str, message: str) -> None:
        super().__init__(f"{file}.toml: {entry}: {message}")
        self.file = file
        self.entry = entry
        self.message = message


Phrase = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]
Phrases = list[Phrase]
SeverityName = Literal["none", "routine", "urgent", "emergency"]
Day = Annotated[int, Field(ge=0, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Phrased(_Strict):
    en: Phrases = []
    es: Phrases = []
    pt: Phrases = []

    @model_validator(mode="after")
    def _has_a_phrase(self) -> _Phrased:
        if not (self.en or self.es or self.pt):
            raise ValueError(f"needs at least one phrase in {' or '.join(LANGUAGES)}")
        return self

    def phrases(self) -> list[str]:
        return [*self.en, *self.es, *self.pt]


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


class _Quoted(_Strict):
    line_prefixes: Phrases = [">"]
    headers: Phrases = []

    @field_validator("headers")
    @classmethod
    def _patterns(cls, headers: list[str]) -> list[str]:
        for pattern in headers:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid pattern: {exc}") from exc
        return headers


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
    fuzzy: _Fuzzy = _Fuzzy()


class _Requests(_Strict):
    en: Phrases = []
    es: Phrases = []
    pt: Phrases = []
    alone: Phrases = []


class KeywordsFile(_Strict):
    opt_out: _Requests = _Requests()
    opt_in: _Requests = _Requests()


# ---- validation -------------------------------------------------------------------------------------


def _message(error: ValidationError, model: type[BaseModel]) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}; allowed: {sorted(model.model_fields)}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _entry(file: str, where: str, model: type[BaseModel], raw: Any) -> Any:
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
                if ident not in known:
                    raise LexiconError("concepts", where, f"{ident!r} is not a concept, qualifier or cue")
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
        for group in category.terminators:
            if group not in parsed_modifiers.terminators:
                raise LexiconError(
                    "modifiers",
                    f"[categories.{name}]",
                    f"terminator group {group!r} is not under [terminators]",
                )

    _tables("normalise", normalise, set(NormaliseFile.model_fields))
    _entry("normalise", "top level", NormaliseFile, normalise)
    _tables("keywords", keywords, set(KeywordsFile.model_fields))
    _entry("keywords", "top level", KeywordsFile, keywords)


SEVERITIES: tuple[str, ...] = tuple(Severity)
