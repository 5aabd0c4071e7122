"""Is a reply written in a language the lexicons read? — pure: no I/O.

The lexicons read English, Spanish and Portuguese. A reply mostly in another language ("Je ne me sens pas
bien", "Tôi bị sưng và đau", "我的脸很肿") is never "none": nothing recognised in it does not mean
nothing is in it. It is "routine" with a finding saying the language was not understood, so a person
reads it (docs/triage-labelling.md rule 4). Thanks, greetings and tapbacks in other languages ("merci",
"salamat po", "cảm ơn", "谢谢") are phrases of the concepts, so a bare "merci beaucoup" is still "none".

A word counts as *read* when it is a common word of a covered language (``engine/languages.toml``), a
word of a covered-language phrase of the lexicons, or one slip from one of those (rapidfuzz); as
*neutral* when it is a courtesy word of another language ("beaucoup", "po"), a word of an
other-language phrase, or an ASCII word of one or two letters ("a", "po", "ok"); everything else is
*unknown*. Mostly unknown (``share`` of the words read or unknown, and at least ``min_words``) is not
understood.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from service.triage.normalise import Token, fold, normalise_phrase
from service.triage.schema import COVERED_LANGUAGES, validate_languages

_CACHE_LIMIT = 50_000


@dataclass(frozen=True, eq=False)
class LanguageCheck:
    understood: frozenset[str]
    neutral: frozenset[str]
    concept: str
    severity: str
    min_words: int
    share: float
    typo_from_length: int
    _by_first: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _cache: dict[str, str] = field(default_factory=dict, repr=False)

    def not_understood(self, tokens: Sequence[Token]) -> bool:
        read = unknown = 0.0
        for tok in tokens:
            kind = self._kind(tok.norm)
            # A character of an unspaced script (Chinese, Japanese) is one token; a word is about two.
            weight = 0.5 if len(tok.norm) == 1 and not tok.norm.isascii() else 1.0
            if kind == "read":
                read += weight
            elif kind == "unknown":
                unknown += weight
        return unknown >= self.min_words and unknown >= self.share * (read + unknown)

    def _kind(self, norm: str) -> str:
        cached = self._cache.get(norm)
        if cached is not None:
            return cached
        if not norm or not norm[0].isalpha():
            kind = "neutral"  # numbers, punctuation, emoji
        elif norm in self.understood:
            kind = "read"
        elif norm in self.neutral or (norm.isascii() and len(norm) <= 2):
            kind = "neutral"
        elif self._one_slip_from_a_word_we_read(norm):
            kind = "read"
        else:
            kind = "unknown"
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache[norm] = kind
        return kind

    def _one_slip_from_a_word_we_read(self, norm: str) -> bool:
        if len(norm) < self.typo_from_length or not norm.isascii():
            return False
        pool = self._by_first.get(norm[0], ())
        return (
            bool(pool)
            and process.extractOne(norm, pool, scorer=Levenshtein.distance, score_cutoff=1) is not None
        )


def compile_language_check(
    raw: Mapping[str, Any],
    word_map: Mapping[str, tuple[str, ...]],
    covered_words: Iterable[str],
    other_words: Iterable[str],
) -> LanguageCheck:
    """``covered_words``: the words of the lexicons' English, Spanish and Portuguese phrases;
    ``other_words``: those of their phrases in other languages (thanks, greetings, tapbacks)."""
    data = validate_languages(raw)
    understood: set[str] = set(covered_words) | set(word_map)
    for values in word_map.values():
        understood.update(values)
    for language in COVERED_LANGUAGES:
        for phrase in getattr(data.understood, language):
            understood.update(normalise_phrase(phrase, word_map))
    neutral = {w for w in other_words if w not in understood}
    for phrase in data.courtesy:
        neutral.update(w for w in normalise_phrase(phrase, word_map) if w not in understood)
    by_first: dict[str, list[str]] = {}
    for word in understood:
        if word.isascii() and word.isalpha() and len(word) >= data.not_understood.typo_from_length - 1:
            by_first.setdefault(fold(word)[0], []).append(word)
    rule = data.not_understood
    return LanguageCheck(
        understood=frozenset(understood),
        neutral=frozenset(neutral),
        concept=rule.concept,
        severity=rule.severity,
        min_words=rule.min_words,
        share=rule.share,
        typo_from_length=rule.typo_from_length,
        _by_first={k: tuple(sorted(v)) for k, v in by_first.items()},
    )
