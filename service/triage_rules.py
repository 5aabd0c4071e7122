"""The triage lexicon from ``templates/triage/*.toml`` — the I/O shell around ``service.core.triage``.

The four files are data a clinic's clinician reviews and may edit (CLINICAL_NOTES.md §10), so a mistake
in them is reported at load time with the file and the entry named, instead of showing up later as a
symptom that silently stops paging anyone. Unknown top-level tables are refused for the same reason: a
misspelt ``[concept.pus]`` would otherwise drop every pus phrase without a word.

    concepts.toml    concepts (severity, phrases en/es/pt, day rules), qualifiers, cues, combinations
    modifiers.toml   negation / resolved / hypothetical / historical triggers, terminators, pseudo-triggers
    normalise.toml   shorthand, misspellings, emoji, number words, day mentions, quoted-text markers, typos
    keywords.toml    plain-language opt-out and opt-in phrases

Loading compiles everything once (a trie, a typo table); ``load_lexicon`` caches the result per directory.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from service.core.triage import LANGUAGES, Lexicon, LexiconError
from service.settings import PROJECT_ROOT

DEFAULT_TRIAGE_DIR = PROJECT_ROOT / "templates" / "triage"

# The tables each file may have. Anything else is a typo or a file from another version.
_FILES: dict[str, frozenset[str]] = {
    "concepts": frozenset({"concepts", "qualifiers", "cues", "combinations"}),
    "modifiers": frozenset(
        {"categories", "terminators", "pseudo", "clauses", "lists", "punctuation", "questions", "tense"}
    ),
    "normalise": frozenset(
        {"shorthand", "spelling", "emoji", "number_words", "day_mentions", "numbers", "quoted", "fuzzy"}
    ),
    "keywords": frozenset({"opt_out", "opt_in"}),
}

_CONCEPT_KEYS = frozenset(
    {
        "severity",
        *LANGUAGES,
        "day_rules",
        "unknown_day",
        "by_treatment",
        "escalate",
        "escalate_to",
        "persist",
        "persist_from_day",
        "calm",
        "calm_to",
        "defer",
        "sign",
    }
)
_QUALIFIER_KEYS = frozenset({*LANGUAGES, "alone"})
_CUE_KEYS = frozenset(LANGUAGES)
_COMBINATION_KEYS = frozenset(
    {"concept", "severity", "scope", "all_of", "max_gap", "gap_words", "gap_words_reverse", "gap_stops"}
)
_CATEGORY_KEYS = frozenset(
    {
        "flags",
        "max_scope",
        "terminators",
        "forward",
        "backward",
        "commas_end_scope",
        "doubles_cancel",
        "clears",
        "past_runs_on",
        "reaches_previous_sentence",
    }
)


def load_lexicon(directory: Path | None = None) -> Lexicon:
    """Read, validate and compile the triage data. Raises ValueError naming the file and the entry."""
    return _load((directory or DEFAULT_TRIAGE_DIR).resolve())


@lru_cache(maxsize=8)
def _load(directory: Path) -> Lexicon:
    data = {name: _read(directory / f"{name}.toml", allowed) for name, allowed in _FILES.items()}
    try:
        _check_shapes(data)
        return Lexicon.from_dicts(
            concepts=data["concepts"],
            modifiers=data["modifiers"],
            normalise=data["normalise"],
            keywords=data["keywords"],
        )
    except LexiconError as exc:
        raise ValueError(f"{directory / (exc.file + '.toml')}: {exc.entry}: {exc.message}") from exc


def clear_lexicon_cache() -> None:
    """Forget compiled lexicons, so edited files are read again (tests; a reload after a clinician's edit)."""
    _load.cache_clear()


def _read(path: Path, allowed: frozenset[str]) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(
            f"{path}: missing (the triage lexicon needs {', '.join(f'{n}.toml' for n in _FILES)})"
        )
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
    return data


def _check_shapes(data: dict[str, dict[str, Any]]) -> None:
    """Key-level checks the compiler does not make: unknown keys and phrase lists of the wrong type."""
    concepts = data["concepts"]
    for section, allowed in (
        ("concepts", _CONCEPT_KEYS),
        ("qualifiers", _QUALIFIER_KEYS),
        ("cues", _CUE_KEYS),
    ):
        for ident, entry in concepts.get(section, {}).items():
            where = f"[{section}.{ident}]"
            if not isinstance(entry, dict):
                raise LexiconError("concepts", where, "must be a table")
            _no_unknown_keys("concepts", where, entry, allowed)
            for language in LANGUAGES:
                _string_list("concepts", where, language, entry.get(language, []))
            for key in ("escalate", "persist", "calm"):
                _string_list("concepts", where, key, entry.get(key, []))
    for index, combo in enumerate(concepts.get("combinations", [])):
        where = f"[[combinations]] #{index + 1}"
        if not isinstance(combo, dict):
            raise LexiconError("concepts", where, "must be a table")
        _no_unknown_keys("concepts", where, combo, _COMBINATION_KEYS)
        groups = combo.get("all_of", [])
        if not isinstance(groups, list) or not all(isinstance(g, list) and g for g in groups):
            raise LexiconError("concepts", where, "all_of must be a list of non-empty lists of ids")

    modifiers = data["modifiers"]
    for name, entry in modifiers.get("categories", {}).items():
        where = f"[categories.{name}]"
        if not isinstance(entry, dict):
            raise LexiconError("modifiers", where, "must be a table")
        _no_unknown_keys("modifiers", where, entry, _CATEGORY_KEYS)
        for key in ("forward", "backward", "terminators", "flags"):
            _string_list("modifiers", where, key, entry.get(key, []))
    for group, phrases in modifiers.get("terminators", {}).items():
        _string_list("modifiers", "[terminators]", group, phrases)
    for section, key in (
        ("pseudo", "phrases"),
        ("clauses", "breaks"),
        ("lists", "connectors"),
        ("tense", "past"),
        ("tense", "present"),
    ):
        _string_list("modifiers", f"[{section}]", key, modifiers.get(section, {}).get(key, []))

    normalise = data["normalise"]
    for table in ("shorthand", "spelling", "emoji", "number_words"):
        for key, value in normalise.get(table, {}).items():
            if not isinstance(value, str):
                raise LexiconError("normalise", f"[{table}] {key!r}", "the replacement must be a string")
    for key in ("words", "protected"):
        _string_list("normalise", "[fuzzy]", key, normalise.get("fuzzy", {}).get(key, []))
    _string_list(
        "normalise", "[day_mentions]", "patterns", normalise.get("day_mentions", {}).get("patterns", [])
    )
    temperature = normalise.get("numbers", {}).get("high_temperature", {})
    for scale in ("celsius", "fahrenheit"):
        bounds = temperature.get(scale, [0, 0])
        if not (
            isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int | float) for b in bounds)
        ):
            raise LexiconError("normalise", "[numbers.high_temperature]", f"{scale} must be [low, high]")
    bounds = normalise.get("numbers", {}).get("fast_pulse", {}).get("range", [0, 0])
    if not (
        isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int | float) for b in bounds)
    ):
        raise LexiconError("normalise", "[numbers.fast_pulse]", "range must be [low, high]")
    quoted = normalise.get("quoted", {})
    _string_list("normalise", "[quoted]", "line_prefixes", quoted.get("line_prefixes", []))
    _string_list("normalise", "[quoted]", "headers", quoted.get("headers", []))
    for pattern in quoted.get("headers", []):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise LexiconError(
                "normalise", "[quoted] headers", f"{pattern!r} is not a valid pattern: {exc}"
            ) from exc

    for section in ("opt_out", "opt_in"):
        table = data["keywords"].get(section, {})
        _no_unknown_keys("keywords", f"[{section}]", table, frozenset({*LANGUAGES, "alone"}))
        for key in (*LANGUAGES, "alone"):
            _string_list("keywords", f"[{section}]", key, table.get(key, []))
    questions = modifiers.get("questions", {})
    _no_unknown_keys("modifiers", "[questions]", questions, frozenset({"marks", "none_becomes"}))
    _string_list("modifiers", "[questions]", "marks", questions.get("marks", ["?"]))


def _no_unknown_keys(file: str, where: str, entry: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise LexiconError(file, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _string_list(file: str, where: str, key: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise LexiconError(file, where, f"{key} must be a list of non-empty strings")
