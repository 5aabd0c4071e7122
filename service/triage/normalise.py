"""Step 1 of triage — normalise and tokenise — pure: no I/O.

Each token of a reply is lower-cased, its accents stripped for matching (the reported words are cut from
the original text), repeated letters collapsed ("sooo swolllen"), and mapped through the tables of
``engine/normalise.toml``: texting shorthand, misspellings, emoji, number words, and the one-letter typos
of key symptom words generated once here. Numbers become words where they mean something: a temperature
("38.5", "101f"), a pulse ("130"). Quoted text (our own warning quoted back in an email) is removed first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from service.triage.schema import SLOT, LexiconError

# A token is an emoticon (":)"), a number ("38.5"), a word (letters/digits, inner apostrophes and slashes:
# "can't", "w/o"), a line break (a sentence boundary in SMS) or any other single character (punctuation,
# an emoji).
_TOKEN = re.compile(
    r"[:;=][-']?[()DPp](?![^\W_])|<3|\d+(?:[.,]\d+)?[fFcC]?(?![^\W_])|[^\W_]+(?:['’/][^\W_]+)*/?|\n|\S"
)
_REPEAT = re.compile(r"([^\W\d_])\1{2,}")
# Zero-width joiners, variation selectors and skin-tone modifiers only decorate an emoji.
_EMOJI_DECORATION = frozenset({"\u200d", "\ufe0e", "\ufe0f", *map(chr, range(0x1F3FB, 0x1F400))})
_NUMBER = re.compile(r"(\d+(?:[.,]\d+)?)(f|c)?", re.IGNORECASE | re.ASCII)  # "38.5", "101f", "38c"
_CURRENCY = frozenset("$£€¥")  # "$39.50" is a price, not a temperature reading
# A long-lived worker must not grow its token cache without bound.
_CACHE_LIMIT = 50_000
# Scripts written without spaces between words (Chinese, Japanese kana, Thai): each character is a token,
# so "谢谢医生" holds the phrase "谢谢".
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# "(a|b|)" in a phrase stands for each of its alternatives (the empty one included): "remove me from
# (your|the|) (text|sms|) list" is six phrases.
_ALTERNATIVES = re.compile(r"\(([^()]*\|[^()]*)\)")
_MAX_EXPANSIONS = 2048
# How far from the end of a message a trailing signature may start.
SIGNATURE_TAIL = 300
_QUOTE_MARKS = re.compile("[“”\"«»„‘’'‹›「」『』]")


class Token(NamedTuple):  # a NamedTuple: several per reply, and cheaper to build than a frozen dataclass
    norm: str
    start: int
    end: int
    value: float | None = None


def fold(raw: str) -> str:
    """Lower case, no accents, no apostrophes: "Tengo FIÈBRE" → "tengo fiebre", "can't" → "cant"."""
    lowered = raw.lower().replace("'", "").replace("’", "")
    if lowered.isascii():
        return lowered
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def expand_alternatives(phrase: str) -> list[str]:
    """Every phrase that "(a|b|)" groups stand for, with spaces tidied: "stop (the|these) texts" → "stop the
    texts", "stop these texts". Raises ValueError past a few hundred (a typo, not a family)."""
    found = _ALTERNATIVES.search(phrase)
    if found is None:
        return [" ".join(phrase.split())]
    out: list[str] = []
    for option in found.group(1).split("|"):
        out.extend(expand_alternatives(phrase[: found.start()] + option + phrase[found.end() :]))
        if len(out) > _MAX_EXPANSIONS:
            raise ValueError(f"{phrase!r} stands for more than {_MAX_EXPANSIONS} phrases")
    return [p for p in dict.fromkeys(out) if p]


def _split_unspaced(raw: str, start: int) -> list[tuple[str, int, int]] | None:
    """A word of an unspaced script, one piece per character (other runs kept whole); None otherwise."""
    if raw.isascii() or not _UNSPACED.search(raw):
        return None
    pieces: list[tuple[str, int, int]] = []
    run = ""
    for offset, char in enumerate(raw):
        if _UNSPACED.match(char):
            if run:
                pieces.append((run, start + offset - len(run), start + offset))
                run = ""
            pieces.append((char, start + offset, start + offset + 1))
        else:
            run += char
    if run:
        pieces.append((run, start + len(raw) - len(run), start + len(raw)))
    return pieces


def is_digits(word: str) -> bool:
    return word.isascii() and word.isdigit()  # "²".isdigit() is true too, and float() refuses it


def normalise_phrase(phrase: str, word_map: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A lexicon phrase goes through the same tables as a message, so both always agree. "{n}" (any
    number) is kept as it is."""
    if SLOT in phrase:
        parts = phrase.split(SLOT)
        out: list[str] = []
        for index, part in enumerate(parts):
            out.extend(normalise_phrase(part, word_map))
            if index < len(parts) - 1:
                out.append(SLOT)
        return tuple(out)
    words: list[str] = []
    for found in _TOKEN.finditer(unicodedata.normalize("NFC", phrase)):
        raw = found.group()
        if raw in _EMOJI_DECORATION or raw == "\n":
            continue
        pieces = _split_unspaced(raw, 0)
        for piece in [p for p, _, _ in pieces] if pieces else [raw]:
            folded = fold(piece)
            if folded:
                words.extend(word_map.get(folded, (folded,)))
    return tuple(words)


def build_word_map(normalise: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    word_map: dict[str, tuple[str, ...]] = {}
    for table in ("shorthand", "spelling", "emoji", "number_words"):
        for key, value in normalise.get(table, {}).items():
            source = fold("".join(c for c in key if c not in _EMOJI_DECORATION))
            if not source:
                raise LexiconError("normalise", f"[{table}] {key!r}", "the key is empty after normalising")
            word_map[source] = tuple(fold(w) for w in value.split())
    # A replacement that is itself a key would make the result depend on table order.
    for key, words in word_map.items():
        for word in words:
            if word in word_map and word != key:
                raise LexiconError("normalise", repr(key), f"maps to {word!r}, which is itself replaced")
    return word_map


def build_fuzzy(
    fuzzy: Mapping[str, Any], vocabulary: frozenset[str], word_map: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """One-letter typos of the key symptom words ("swolen", "feaver", "blistres"), generated once.

    A variant that is a real word we know (in the lexicon, or listed as protected, e.g. "never" next to
    "fever") is never corrected, and a variant two targets share is dropped as ambiguous.
    """
    protected = {fold(w) for w in fuzzy.get("protected", [])} | vocabulary | set(word_map)
    owner: dict[str, str | None] = {}
    for target in fuzzy.get("words", []):
        word = fold(target)
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


@dataclass(frozen=True, eq=False)
class Normaliser:
    """The compiled tables of step 1, and the steps themselves."""

    word_map: Mapping[str, tuple[str, ...]]
    vocabulary: frozenset[str]
    day_patterns: tuple[tuple[tuple[str, ...], int], ...]
    high_temperature: tuple[tuple[float, float], ...]
    high_temperature_word: str
    temperature_reading_word: str
    fast_pulse: tuple[float, float]
    fast_pulse_word: str
    reply_headers: tuple[re.Pattern[str], ...]
    quote_prefixes: tuple[str, ...]
    tapbacks: tuple[re.Pattern[str], ...] = ()
    tapback_word: str = "tapback"
    sign_off_names: tuple[re.Pattern[str], ...] = ()
    signatures: tuple[re.Pattern[str], ...] = ()
    _cache: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def strip_quoted(self, text: str) -> str:
        """Drop quoted lines and everything after a reply header: our own footer ("watch for pus or
        fever") quoted back in a reply must never raise an alarm (docs/clinical-basis.md#schedule). A
        tapback ("Liked “…”", "Reacted 👍 to “…”", "Le gustó “…”") quotes our message whole: it becomes
        the one word ``tapback_word``, which the concepts read as a reaction (nothing to act on)."""
        if _QUOTE_MARKS.search(text):  # a tapback quotes our message
            for tapback in self.tapbacks:
                text = tapback.sub(f" {self.tapback_word} ", text)
        if "\n" in text:  # a name is signed on a line of its own
            for sign_off in self.sign_off_names:
                text = sign_off.sub(r"\1", text)
        for header in self.reply_headers:
            found = header.search(text)
            if found:
                text = text[: found.start()]
        if any(prefix in text for prefix in self.quote_prefixes):
            text = "\n".join(
                line
                for line in text.split("\n")
                # ">>> http://… <<<" frames a link: decoration, not a quote
                if not line.lstrip().startswith(self.quote_prefixes) or line.rstrip().endswith("<<<")
            )
        return text

    def strip_signature(self, text: str) -> str:
        """The message without a trailing signature ("- Maria", "Sent from my iPhone", a phone number):
        what a request standing alone is judged on ("STOP STOP\n- Maria 555-0101" is a bare STOP)."""
        # A signature is at the very end: the patterns look at the last few hundred characters only, so an
        # unanchored search cannot be quadratic on a long message (docs/benchmarks.md#text).
        changed = True
        while changed:
            changed = False
            offset = max(0, len(text) - SIGNATURE_TAIL)
            tail = text[offset:]
            for pattern in self.signatures:
                found = pattern.search(tail)
                if found and found.end() >= len(tail.rstrip()):
                    text, changed = text[: offset + found.start()], True
                    break
        return text

    def tokenise(self, text: str) -> list[Token]:
        tokens: list[Token] = []
        for found in _TOKEN.finditer(text):
            raw = found.group()
            if raw in _EMOJI_DECORATION:
                continue
            start, end = found.span()
            number = _NUMBER.fullmatch(raw) if raw[0] in "0123456789" else None
            if number is not None:
                value = float(number.group(1).replace(",", "."))
                word = self._number_word(text, number, start, end, value)
                tokens.append(Token(word, start, end, value))
                if number.group(2):
                    tokens.append(Token(number.group(2).lower(), start, end))
                continue
            if len(raw) > 1 and "/" in raw and fold(raw) not in self.word_map:
                # "red/swollen" is two words; "w/o" and "w/" are shorthand (looked up whole above).
                offset = start
                for part in raw.split("/"):
                    if part:
                        tokens.extend(
                            Token(w, offset, offset + len(part)) for w in self._normalise_word(part)
                        )
                    offset += len(part) + 1
                continue
            pieces = _split_unspaced(raw, start)
            if pieces is not None:
                for piece, begin, finish in pieces:
                    tokens.extend(Token(word, begin, finish) for word in self._normalise_word(piece))
                continue
            tokens.extend(Token(word, start, end) for word in self._normalise_word(raw))
        return tokens

    def day_from_text(self, tokens: Sequence[Token]) -> int | None:
        """ "day 5", "3 days ago", "hace 4 días": the patient's own count when the system has none."""
        norms = [t.norm for t in tokens]
        for i, tok in enumerate(tokens):
            # A number typed as digits, or a number word mapped to digits ("day three").
            value = tok.value if tok.value is not None else (float(tok.norm) if is_digits(tok.norm) else None)
            if value is None or value >= 60:
                continue
            for pattern, slot in self.day_patterns:
                begin = i - slot
                if begin < 0 or begin + len(pattern) > len(norms):
                    continue
                if all(p == SLOT or p == norms[begin + k] for k, p in enumerate(pattern)):
                    return int(value)
        return None

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
        word = fold(raw)
        if word not in self.vocabulary and word not in self.word_map and _REPEAT.search(word):
            word = self._collapse(word)
        result = self.word_map.get(word, (word,) if word else ())
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache[raw] = result
        return result

    def _collapse(self, word: str) -> str:
        """ "sooo" → "so", "swolllen" → "swollen": letters typed three or more times in a row."""
        two = _REPEAT.sub(r"\1\1", word)
        if two in self.vocabulary or two in self.word_map:
            return two
        return _REPEAT.sub(r"\1", word)


def build_normaliser(
    normalise: Mapping[str, Any], word_map: Mapping[str, tuple[str, ...]], phrase_words: set[str]
) -> Normaliser:
    """The step-1 tables, once every phrase of the lexicon is known (they are never typo-corrected)."""
    day_patterns: list[tuple[tuple[str, ...], int]] = []
    for phrase in normalise.get("day_mentions", {}).get("patterns", []):
        words = normalise_phrase(phrase, word_map)
        if words.count(SLOT) != 1:
            raise LexiconError("normalise", f"[day_mentions] {phrase!r}", "needs exactly one {n}")
        day_patterns.append((words, words.index(SLOT)))
    numbers = normalise.get("numbers", {})
    temperature = numbers.get("high_temperature", {})
    pulse = numbers.get("fast_pulse", {})
    pulse_range = tuple(float(b) for b in pulse.get("range", [0, 0]))
    quoted = normalise.get("quoted", {})
    vocabulary = frozenset(phrase_words | {w for words in word_map.values() for w in words})
    fuzzy = build_fuzzy(normalise.get("fuzzy", {}), vocabulary, word_map)
    return Normaliser(
        word_map={**fuzzy, **word_map},
        vocabulary=vocabulary,
        day_patterns=tuple(day_patterns),
        high_temperature=tuple(
            (float(low), float(high))
            for low, high in (
                temperature.get("celsius", [38.0, 43.0]),
                temperature.get("fahrenheit", [100.4, 108]),
            )
        ),
        high_temperature_word=str(temperature.get("word", "hightemp")),
        temperature_reading_word=str(temperature.get("reading_word", "")),
        fast_pulse=(pulse_range[0], pulse_range[1]),
        fast_pulse_word=str(pulse.get("word", "")),
        reply_headers=tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in quoted.get("headers", [])),
        quote_prefixes=tuple(quoted.get("line_prefixes", [">"])),
        tapbacks=tuple(
            re.compile(p, re.IGNORECASE | re.MULTILINE | re.DOTALL) for p in quoted.get("tapbacks", [])
        ),
        tapback_word=str(quoted.get("tapback_word", "tapback")),
        sign_off_names=tuple(
            re.compile(p, re.IGNORECASE | re.MULTILINE) for p in quoted.get("sign_off_names", [])
        ),
        signatures=tuple(
            re.compile(p, re.IGNORECASE) for p in normalise.get("signatures", {}).get("patterns", [])
        ),
    )
