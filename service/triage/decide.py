"""Step 3 of triage — decide — pure: no I/O, no clock, no database.

``triage(text, day=..., lexicon=...)`` answers three questions about one reply
(docs/architecture.md#triage):

- **severity** — ``emergency`` (airway, breathing, fainting, anaphylaxis, sepsis signs), ``urgent``
  (anything a clinician should see today), ``routine`` (expected healing, aftercare questions,
  rescheduling) or ``none`` (thanks, greetings);
- **keyword** — ``stop`` / ``start`` / ``help`` for the carrier compliance keywords sent alone,
  ``stop`` for a plain-language opt-out ("stop texting me"), which still gets a severity from any symptom
  in the same message, and ``start`` for a plain-language opt-in ("I want the reminders back");
- **findings** — what led there: the concept, the patient's own words, and whether it was negated
  ("no pus"), hypothetical ("what if it gets infected?") or historical ("cold sores last year").

The engine is small and every clinical decision lives in ``templates/triage/vocabulary/`` (a clinician
reviews those, not this file). The steps:

1. **Normalise** (``service.triage.normalise``) and 2. **Match** (``service.triage.match``): each token
   goes through the tables, and one token trie finds every phrase of the lexicon, the longest phrase
   winning where phrases overlap.
3. **ConText modifiers**: negation, resolution ("not swollen anymore"), hypothetical, historical and
   someone-else's-story triggers, each with a direction, a scope limited in words and cut by terminators
   ("but", "pero", "."); two negations in a row cancel ("I don't think it's not infected"); a
   confirmation ("…well, there is") takes a hypothetical back. A list of findings costs no words ("no pus
   or fever or blisters") and a status ends it ("…, all good"); an old story runs over commas while it is
   told in the past ("last time, years ago, I got a cold sore"); a denial or a confirmation may answer the
   what-ifs of the sentence before ("You said to watch for pus. None of that!").
4. **Rules**: per-concept day rules (redness on day 1 is expected, on day 5 it is not), qualifiers in the
   same clause ("spreading", "came back", "getting better"), and combinations (fever + confusion →
   possible sepsis; lip + swelling → airway).
5. **Combine**: the highest severity among findings that are present now (not negated, hypothetical or
   historical). A message in which nothing was recognised is ``routine``: a person on the staff reads it,
   because silence ("none") could hide a symptom worded in a way the lexicon does not know, and raising
   every unknown message to urgent would page a clinician for "I'll be 10 min late". Likewise a question
   with nothing clinical in it, and history or what-ifs beside an "all good": someone should answer.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from service.core.enums import RiskFlag, Severity
from service.triage.keywords import COMPLIANCE_KEYWORDS, compliance_keyword
from service.triage.lexicon import Combination, ConceptRule, Hit, Lexicon, ModifierCategory
from service.triage.match import Match
from service.triage.normalise import Token
from service.triage.red_flags import ScreenHit
from service.triage.schema import FROM_CONCEPT, RISK_PREFIX

ALLOWED_RISK_FLAGS: tuple[str, ...] = tuple(flag.value for flag in RiskFlag)
# Carrier words that opt out: "STOP STOP STOP" or "Stop 🛑 stop" is still one of them, said louder.
_STOP_WORDS = frozenset(word.lower() for word, kind in COMPLIANCE_KEYWORDS.items() if kind == "stop")
# Not "yes": alone it answers a question as often as it opts in.
_START_WORDS = frozenset(w.lower() for w, kind in COMPLIANCE_KEYWORDS.items() if kind == "start") - {"yes"}
_SNIPPET_WORDS = 12  # how much of the reply a finding about the whole reply quotes


def _rank(severity: str) -> int:
    return Severity(severity).rank


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the reply said, in the patient's own words, and how it was said."""

    concept: str
    words: str
    severity: str
    negated: bool = False
    hypothetical: bool = False
    historical: bool = False

    @property
    def present(self) -> bool:
        """Reported as present now: only these set the message's severity."""
        return not (self.negated or self.hypothetical or self.historical)

    def to_json(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "words": self.words,
            "severity": self.severity,
            "negated": self.negated,
            "hypothetical": self.hypothetical,
            "historical": self.historical,
        }


@dataclass(frozen=True, slots=True)
class TriageResult:
    severity: str
    keyword: str | None
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "keyword": self.keyword,
            "findings": [finding.to_json() for finding in self.findings],
        }


# --------------------------------------------------------------------------------------------------
# Triage
# --------------------------------------------------------------------------------------------------


def check_risk_flags(risk_flags: Iterable[str]) -> frozenset[str]:
    """The intake risk flags as a set; ValueError naming the allowed values for one we do not know (an
    unknown flag is refused, never ignored: service.core.enums.RiskFlag)."""
    if isinstance(risk_flags, str):
        raise ValueError(f"risk_flags must be a list of flags, not the string {risk_flags!r}")
    flags = frozenset(str(flag) for flag in risk_flags)
    unknown = sorted(flags - set(ALLOWED_RISK_FLAGS))
    if unknown:
        raise ValueError(
            f"unknown risk flag(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(ALLOWED_RISK_FLAGS)}"
        )
    return flags


def triage(
    text: str,
    *,
    day: int | None,
    lexicon: Lexicon,
    treatment: str | None = None,
    risk_flags: Iterable[str] = (),
    second_opinion: bool = True,
) -> TriageResult:
    """Severity, compliance keyword and findings for one patient reply.

    ``day``: whole days since the treatment (0 = the day of treatment); None when unknown, in which case a
    day the patient wrote ("it's day 5") is used, and otherwise each concept's ``unknown_day`` severity.
    ``risk_flags``: what the clinic knows from intake (values of ``service.core.enums.RiskFlag``); they
    take part in combinations ("risk:eczema" + new blisters → urgent). An unknown flag is a ValueError.
    ``second_opinion``: let the learned classifier speak. It learned from text messages; on email, which
    it never saw, it raised non-clinical mail to urgent (4 of 107 outside fixtures, docs/triage.md), so
    the inbound worker turns it off there and the rules alone decide.
    """
    flags = check_risk_flags(risk_flags)
    keyword: str | None = compliance_keyword(text)
    if keyword is not None:
        # A carrier keyword alone says nothing clinical; the carrier has already acted on it.
        return TriageResult(severity="none", keyword=keyword, findings=())

    body = lexicon.strip_quoted(unicodedata.normalize("NFC", text))
    tokens = lexicon.tokenise(body)
    if day is None:
        day = lexicon.day_from_text(tokens)
    matches = lexicon.match(tokens)
    screened = lexicon.red_flags.find(body, tokens)
    clause_of, sentence_of = _segment(tokens, matches, lexicon)
    for screen_hit in screened:
        screen_hit.clause, screen_hit.sentence = clause_of[screen_hit.start], sentence_of[screen_hit.start]
    hits, requests = _hits(body, tokens, matches, clause_of, sentence_of, lexicon)
    _apply_modifiers(tokens, _outside_screen(matches, screened), hits, requests, lexicon, screened)

    norms = [t.norm for t in tokens]
    n = len(tokens)
    risks = [Hit(RISK_PREFIX + flag, "risk", n, n, f"risk flag: {flag}", -1, -1) for flag in sorted(flags)]
    placed = _findings([*hits, *risks], norms, day=day, treatment=treatment, lexicon=lexicon)
    placed.extend((r.start, _finding(r, "none")) for r in requests)
    placed.extend(
        (f.start, Finding(f.concept, f.words, f.severity, *(flag in f.flags for flag in _FLAGS)))
        for f in lexicon.red_flags.findings(screened, norms, flags)
    )
    if lexicon.language.not_understood(tokens):
        placed.append(
            (n, Finding(lexicon.language.concept, _snippet(body, tokens), lexicon.language.severity))
        )
    placed.sort(key=lambda pair: pair[0])  # in the order the patient wrote them
    findings = list(dict.fromkeys(finding for _, finding in placed))  # two rules may find the same thing
    keyword = _plain_keyword(body, tokens, hits, requests, findings, lexicon)
    severity = _combine(findings, keyword=keyword)
    if (
        not findings
        and tokens
        and not any(t.norm[0].isalnum() or t.norm in lexicon.question_marks for t in tokens)
    ):
        severity = "none"  # emoji alone ("💀💀💀", "🙌"): a reaction (docs/triage-labelling.md rule 5)
    if severity == "none" and keyword is None and any(t.norm in lexicon.question_marks for t in tokens):
        severity = lexicon.question_floor  # a question, even a friendly one, needs someone to answer it
    classifier = lexicon.classifier
    if (
        classifier.enabled
        and second_opinion
        and tokens
        and not (classifier.only_when_nothing_recognised and any(_clinical(f, lexicon) for f in findings))
    ):
        opinion = classifier.opinion(norms)
        # A second opinion only ever raises: the rules and the screen are never argued down by it.
        if opinion is not None and _rank(opinion[0]) > _rank(severity):
            severity = opinion[0]
            words = f"{_snippet(body, tokens)} (p={opinion[1]:.2f})"
            findings.append(Finding(classifier.concept, words, severity))
    return TriageResult(severity=severity, keyword=keyword, findings=tuple(findings))


_FLAGS = ("negated", "hypothetical", "historical")


def _clinical(finding: Finding, lexicon: Lexicon) -> bool:
    """A sign of the skin or body, whether present, denied, supposed or past (not thanks, a question, a
    booking, an opt-out or an unknown language)."""
    if finding.concept in _REQUESTS or finding.concept == lexicon.language.concept:
        return False
    rule = lexicon.concepts.get(finding.concept)
    if rule is None:  # made by a combination, or a red flag
        return True
    return rule.sign and rule.severity != "none"


def _snippet(body: str, tokens: Sequence[Token]) -> str:
    """The first words of the reply, for a finding about the reply as a whole."""
    last = tokens[min(len(tokens), _SNIPPET_WORDS) - 1] if tokens else None
    words = body[tokens[0].start : last.end] if last is not None else body
    return (words + (" …" if len(tokens) > _SNIPPET_WORDS else "")).strip() or body.strip() or "(empty)"


def _outside_screen(matches: Sequence[Match], screened: Sequence[ScreenHit]) -> list[Match]:
    """The matches whose modifiers apply: a trigger word inside a longer red-flag phrase ("não consigo
    respirar", "no puedo mover el brazo") is part of the phrase, as it would be in one trie."""
    if not screened:
        return list(matches)
    kept = []
    for m in matches:
        only_modifier = all(kind not in ("term", "optout", "optin") for kind, _ in m.payloads)
        inside = only_modifier and any(
            h.start < m.end and m.start < h.end and h.end - h.start > m.end - m.start for h in screened
        )
        if not inside:
            kept.append(m)
    return kept


def _segment(
    tokens: Sequence[Token], matches: Sequence[Match], lexicon: Lexicon
) -> tuple[list[int], list[int]]:
    """The clause and sentence index of every token. Sentences end at . ! ? ; and line breaks; clauses
    also at "but", "pero", "however" — "the swelling is better but the redness is spreading" is two."""
    breaks_clause = {m.start for m in matches if any(kind == "clause" for kind, _ in m.payloads)}
    clause_of: list[int] = []
    sentence_of: list[int] = []
    clause = sentence = 0
    for index, tok in enumerate(tokens):
        if index in breaks_clause:
            clause += 1
        clause_of.append(clause)
        sentence_of.append(sentence)
        if tok.norm in lexicon.sentence_ends:
            clause += 1
            sentence += 1
    return clause_of, sentence_of


def _hits(
    body: str,
    tokens: Sequence[Token],
    matches: Sequence[Match],
    clause_of: Sequence[int],
    sentence_of: Sequence[int],
    lexicon: Lexicon,
) -> tuple[list[Hit], list[Hit]]:
    hits: list[Hit] = []
    requests: list[Hit] = []  # plain-language opt-outs and opt-ins
    for m in matches:
        for kind, ident in m.payloads:
            if kind in ("term", "optout", "optin"):
                words = body[tokens[m.start].start : tokens[m.end - 1].end]
                hit = Hit(
                    ident,
                    lexicon.term_kinds.get(ident, kind),
                    m.start,
                    m.end,
                    words,
                    clause_of[m.start],
                    sentence_of[m.start],
                )
                (hits if kind == "term" else requests).append(hit)
    return hits, requests


def _apply_modifiers(
    tokens: Sequence[Token],
    matches: Sequence[Match],
    hits: list[Hit],
    requests: list[Hit],
    lexicon: Lexicon,
    screened: Sequence[ScreenHit] = (),
) -> None:
    """ConText: each trigger flags the hits (and opt-out/in requests, and the red-flag screen's hits) whose
    first token is in its scope."""
    n = len(tokens)
    # Tokens of clinical findings (not thanks or greetings) and cues: what a list after a comma is made of.
    listed = [False] * n
    for hit in hits:
        rule = lexicon.concepts.get(hit.term)
        if hit.kind == "cue" or (rule is not None and rule.severity != "none"):
            for k in range(hit.start, hit.end):
                listed[k] = True
    for screen_hit in screened:  # a red-flag phrase is a finding; a word of one of its groups may not be
        if screen_hit.term.startswith("flag:"):
            for k in range(screen_hit.start, screen_hit.end):
                listed[k] = True
    owner: list[Match | None] = [None] * n  # the match each token belongs to
    for m in matches:
        for k in range(m.start, m.end):
            owner[k] = m
    scan = _Scan(tokens, owner, listed, lexicon)
    findings_said: list[Any] = [*hits, *screened]
    everything = findings_said + requests
    cancelled: set[tuple[int, str]] = set()  # triggers undone by a double negative
    triggers = [(m, ident) for m in matches for kind, ident in m.payloads if kind == "trigger"]

    # Categories that clear flags go last, so they see what the others set; those that reach back a
    # sentence go just before, so they see what was put as a what-if there.
    def order(pair: tuple[Match, str]) -> tuple[bool, bool]:
        category = lexicon.categories[pair[1].split(":")[0]]
        return category.clears, category.reaches_previous_sentence

    triggers.sort(key=order)
    for m, ident in triggers:
        if (id(m), ident) in cancelled:
            continue
        name, direction = ident.split(":")
        category = lexicon.categories[name]
        # An opt-out is honoured unless it is negated or hypothetical ("don't stop texting me", "if I
        # reply stop…"); history never undoes one: "don't text me anymore" is a request, not the past.
        targets = findings_said if "historical" in category.flags else everything
        if direction == "forward":
            lo, hi, doubled = m.end, *scan.forward(m, category)
            inside = [h for h in targets if lo <= h.start < hi]
            if doubled is not None and category.doubles_cancel and not inside:
                # "I don't think it's not infected", "not without pain": the second negation undoes
                # the first, so neither flags anything and the finding stands.
                cancelled.update((id(doubled), i) for k, i in doubled.payloads if k == "trigger")
                continue
        else:
            lo, boundary = scan.backward(m, category)
            inside = [
                h
                for h in targets
                if lo <= h.start and h.end <= m.start and (h.start >= boundary or "hypothetical" in h.flags)
            ]
        for hit in inside:
            if category.clears:
                hit.flags.difference_update(category.flags)
            else:
                hit.flags.update(category.flags)


@dataclass(slots=True)
class _Scan:
    """Walks from a trigger to the end of its scope."""

    tokens: Sequence[Token]
    owner: Sequence[Match | None]
    listed: Sequence[bool]
    lexicon: Lexicon

    def forward(self, trigger: Match, category: ModifierCategory) -> tuple[int, Match | None]:
        """The end of the scope, and the trigger of the same category that ended it right away (if any).

        Once a finding is in scope, the rest of a list of findings costs no words ("don't have any pus or
        fever or blisters" negates all three), and a status ("no pus no fever, all good") ends the list.
        """
        j, words, n = trigger.end, 0, len(self.tokens)
        crossed = in_list = joined = False
        lexicon = self.lexicon
        while j < n and words < category.max_scope:
            if self._ends(j, category) or (in_list and self._status(j)):
                m = self.owner[j]
                same = m is not None and m is not trigger and self._same_category_trigger(m, category)
                return j, (m if same and not crossed else None)
            norm = self.tokens[j].norm
            if norm in lexicon.list_separators:
                crossed = True
                if (
                    category.commas_end_scope
                    and not self._continues_list(j + 1)
                    and not (category.past_runs_on and self._story_goes_on(j + 1))
                ):
                    break
            joiner = norm in lexicon.connectors or norm in lexicon.list_separators
            if self.listed[j]:
                m = self.owner[j]
                # A finding costs one word, and none when a list goes on ("pus or fever or blisters").
                free = (m is not None and m.start != j) or (in_list and joined)
                in_list, joined = True, False
            else:
                free = in_list and joiner
                joined = joiner
            if not free:
                words += 1
            j += 1
        return j, None

    def backward(self, trigger: Match, category: ModifierCategory) -> tuple[int, int]:
        """The start of the scope, and where the trigger's own sentence begins within it."""
        j, words = trigger.start, 0
        boundary = 0
        sentence_ends = self.lexicon.sentence_ends
        crossings = 1 if category.reaches_previous_sentence else 0
        crossing = False  # in the run of marks that ends the sentence before ("fever?! None of that")
        while j > 0 and words < category.max_scope:
            previous = j - 1
            if category.commas_end_scope and self.tokens[previous].norm in self.lexicon.list_separators:
                break
            m = self.owner[previous]
            begin = m.start if m is not None else previous
            if m is None and self.tokens[previous].norm in sentence_ends and (crossing or crossings):
                crossings, crossing = (crossings if crossing else crossings - 1), True
                j = boundary = begin
                continue
            crossing = False
            if self._ends(begin, category):
                break
            j = begin
            words += 1
        return j, (boundary if boundary else j)

    def _same_category_trigger(self, m: Match, category: ModifierCategory) -> bool:
        return any(kind == "trigger" and ident.split(":")[0] == category.name for kind, ident in m.payloads)

    def _ends(self, index: int, category: ModifierCategory) -> bool:
        if self.tokens[index].norm in self.lexicon.sentence_ends:
            return True
        m = self.owner[index]
        if m is None or m.start != index:
            return False
        for kind, ident in m.payloads:
            if kind == "terminator" and ident in category.terminator_ids:
                return True
        # A new trigger of the same category starts its own scope: in "no pus no fever" each "no"
        # governs its own word.
        return self._same_category_trigger(m, category)

    def _status(self, index: int) -> bool:
        """A status ("all good", "ok", "nothing") starts at this token."""
        m = self.owner[index]
        if m is None or m.start != index:
            return False
        concepts = self.lexicon.concepts
        for kind, ident in m.payloads:
            rule = concepts.get(ident) if kind == "term" else None
            if rule is not None and rule.severity == "none":
                return True
        return False

    def _story_goes_on(self, j: int) -> bool:
        """Does the clause from token j to the next comma or sentence end carry on a story told in the
        past: no word of the present, and a word of the past or no finding at all ("years ago")?"""
        lexicon = self.lexicon
        past = finding = False
        for k in range(j, len(self.tokens)):
            norm = self.tokens[k].norm
            if norm in lexicon.present_words:
                return False
            if norm in lexicon.sentence_ends or norm in lexicon.list_separators:
                break
            past = past or norm in lexicon.past_words
            finding = finding or self._finding_at(k)
        return past or not finding

    def _finding_at(self, index: int) -> bool:
        """A concept of some severity (not a cue, not a status) covers this token."""
        m = self.owner[index]
        if m is None:
            return False
        concepts = self.lexicon.concepts
        for kind, ident in m.payloads:
            rule = concepts.get(ident) if kind == "term" else None
            if rule is not None and rule.severity != "none":
                return True
        return False

    def _continues_list(self, j: int) -> bool:
        """After a comma, does the scope carry on? Only when what follows is a bare list of findings
        ("no redness, swelling or pain"), never a new clause ("no fever, my lip is swelling") nor a
        status ("no pain, all healed"): a negation that runs too far hides a symptom."""
        seen_finding = False
        lexicon = self.lexicon
        while j < len(self.tokens):
            norm = self.tokens[j].norm
            if norm in lexicon.sentence_ends or norm in lexicon.list_separators:
                break
            if self.listed[j]:
                seen_finding = True
            elif norm not in lexicon.connectors:
                return False
            j += 1
        return seen_finding


def _findings(
    hits: Sequence[Hit], norms: Sequence[str], *, day: int | None, treatment: str | None, lexicon: Lexicon
) -> list[tuple[int, Finding]]:
    findings: list[tuple[int, Finding]] = []
    concepts = [h for h in hits if h.kind == "concept"]
    qualifiers = [h for h in hits if h.kind == "qualifier" and h.present]
    # A qualifier shapes the concepts of its own clause that list it; one whose clause has none of those
    # reaches the rest of its sentence ("still a little red, but much better now").
    nearby: dict[int, set[str]] = {id(c): set() for c in concepts}
    used: set[int] = set()
    # Only a concept reported as present takes a qualifier: in "the redness went away yesterday but it's
    # back today", "back" is news of its own, not a detail of the redness that went away.
    takes = [c for c in concepts if c.present]
    for q in qualifiers:
        takers = [c for c in takes if c.clause == q.clause and _takes(lexicon.concepts[c.term], q.term)]
        if not takers:
            takers = [
                c for c in takes if c.sentence == q.sentence and _takes(lexicon.concepts[c.term], q.term)
            ]
        for c in takers:
            nearby[id(c)].add(q.term)
        if takers:
            used.add(id(q))

    for hit in concepts:
        rule = lexicon.concepts[hit.term]
        severity = rule.base_severity(day, treatment)
        present = nearby[id(hit)]
        persisting = present & rule.persist if day is None or day >= rule.persist_from_day else set()
        # Spreading, worse, back again: always raise. "Getting better" beats a mere "still" ("still a
        # little red but much better") and lowers a day rule, but never beats a reason to raise.
        if present & rule.escalate:
            severity = _max(severity, rule.escalate_to)
        elif present & rule.calm:
            if _rank(severity) > _rank(rule.calm_to):
                severity = rule.calm_to
        elif persisting:
            severity = _max(severity, rule.escalate_to)
        findings.append((hit.start, _finding(hit, severity)))

    # A qualifier no concept took says something of its own: "it's getting worse" (urgent), "much better
    # today" (none). Others ("again", "still") mean nothing alone.
    # Beside a symptom that does not take it, a qualifier adds nothing: the symptom's own rules decide
    # ("the flaking is worse" on day 4 is still expected flaking).
    # Only a symptom reported as present counts: in "the red went away and now it's back", "back" is news.
    clinical_clauses = {
        hit.clause for hit in concepts if hit.present and lexicon.concepts[hit.term].severity != "none"
    }
    for hit in qualifiers:
        alone = lexicon.qualifier_alone.get(hit.term)
        if id(hit) in used or alone is None or hit.clause in clinical_clauses:
            continue
        findings.append((hit.start, _finding(hit, alone)))

    findings.extend(_combinations(hits, norms, lexicon, day, treatment))
    return _defer(findings, lexicon)


def _defer(findings: list[tuple[int, Finding]], lexicon: Lexicon) -> list[tuple[int, Finding]]:
    """Concepts marked ``defer`` step back to routine when a sign is present."""

    def deferring(f: Finding) -> bool:
        rule = lexicon.concepts.get(f.concept)
        return rule is not None and rule.defer

    def sign(f: Finding) -> bool:
        rule = lexicon.concepts.get(f.concept)  # combinations and qualifiers standing alone are signs
        return f.present and f.severity != "none" and (rule is None or (rule.sign and not rule.defer))

    if not any(sign(f) for _, f in findings):
        return findings
    return [
        (
            start,
            replace(f, severity="routine") if deferring(f) and _rank(f.severity) > _rank("routine") else f,
        )
        for start, f in findings
    ]


def _takes(rule: ConceptRule, qualifier: str) -> bool:
    return qualifier in rule.escalate or qualifier in rule.persist or qualifier in rule.calm


def _combinations(
    hits: Sequence[Hit], norms: Sequence[str], lexicon: Lexicon, day: int | None, treatment: str | None
) -> list[tuple[int, Finding]]:
    found: list[tuple[int, Finding]] = []
    present = [h for h in hits if h.present]
    terms = {h.term for h in present}
    for combo in lexicon.combinations:
        # Most messages mention one or two things: a set test skips nearly every rule before any grouping.
        if any(terms.isdisjoint(group) for group in combo.groups):
            continue
        units: dict[Any, list[Hit]] = {}
        for hit in present:
            key = hit.clause if combo.scope == "clause" else hit.sentence if combo.scope == "sentence" else 0
            units.setdefault(key, []).append(hit)
        for unit in units.values():
            members = _members(combo, unit, norms)
            if members:
                ordered = sorted(members, key=lambda h: h.start)
                words = " … ".join(h.words for h in ordered)
                severity = combo.severity
                if severity == FROM_CONCEPT:  # "lines … still raised" is tram tracks, with their day rules
                    severity = lexicon.concepts[combo.concept].base_severity(day, treatment)
                found.append((ordered[0].start, Finding(combo.concept, words, severity)))
                # Combinations may build on each other (temperature + 39.5 → fever; fever + confusion →
                # sepsis signs), so a produced concept joins the pool for the rules after it.
                first = ordered[0]
                present.append(
                    Hit(
                        combo.concept,
                        "concept",
                        first.start,
                        ordered[-1].end,
                        words,
                        first.clause,
                        first.sentence,
                    )
                )
                terms.add(combo.concept)
                break
    return found


def _members(combo: Combination, unit: Sequence[Hit], norms: Sequence[str]) -> list[Hit]:
    """One hit per group, or [] when some group has none (or, for pairs, none close enough)."""
    candidates = [[h for h in unit if h.term in group] for group in combo.groups]
    if not all(candidates):
        return []
    if len(candidates) != 2 or not combo.has_proximity:
        return [group[0] for group in candidates]
    in_combo = [False] * len(norms)
    for group in candidates:
        for hit in group:
            for k in range(hit.start, hit.end):
                in_combo[k] = True
    for first in candidates[0]:
        for second in candidates[1]:
            if first is not second and combo.close_enough(first, second, norms, in_combo):
                return [first, second]
    return []


def _finding(hit: Hit, severity: str) -> Finding:
    return Finding(
        concept=hit.term,
        words=hit.words,
        severity=severity,
        negated="negated" in hit.flags,
        hypothetical="hypothetical" in hit.flags,
        historical="historical" in hit.flags,
    )


def _combine(findings: Sequence[Finding], *, keyword: str | None) -> str:
    clinical = [f for f in findings if f.concept not in _REQUESTS]
    present = [f for f in clinical if f.present]
    if present:
        severity = max((f.severity for f in present), key=_rank)
        # "I had a cold sore last year, all good now": history and what-ifs go on the chart, so someone
        # reads them; a plain denial beside "all good" ("no pain, no fever, all healed") does not need it.
        told = any(
            f.severity != "none" and (f.hypothetical or f.historical) and not f.negated for f in clinical
        )
        return "routine" if severity == "none" and told else severity
    if clinical or keyword is None:
        # Only negated, hypothetical or historical findings ("what if it gets infected?", "no pus, no
        # fever"), or nothing recognised at all: a person on the staff reads it (module docstring).
        return "routine"
    return "none"  # "stop texting me" and nothing else


_REQUESTS = frozenset({"opt_out", "opt_in"})


def _plain_keyword(
    body: str,
    tokens: Sequence[Token],
    hits: Sequence[Hit],
    requests: Sequence[Hit],
    findings: Sequence[Finding],
    lexicon: Lexicon,
) -> str | None:
    """ "stop" for a plain-language opt-out, "start" for an opt-in. Opting out wins when a message says
    both: texting someone who asked us to stop is the mistake that cannot be undone.

    A request stands alone when nothing but courtesy (thanks, a greeting, an "ok", "pls", a 🙏) and a
    signature ("- Maria", a phone number, "Sent from my iPhone") is beside it: "pls stop 🙏", "STOP STOP
    🛑". It also counts said on its own at the start or the end of a message with nothing clinical in it
    ("STOP pls, I'm done with the series", "…, please stop"), and a STOP said twice or more at the start
    counts whatever follows ("stop stop stop 🛑 and my eye is swollen": both the opt-out and the eye).
    """
    asked_out = any(r.present and r.term == "opt_out" for r in requests)
    asked_in = any(r.present and r.term == "opt_in" for r in requests)
    if not any(t.norm in lexicon.alone_words for t in tokens):  # most replies: no word of a bare request
        return "stop" if asked_out else "start" if asked_in else None
    segments = _bare_segments(body, tokens, hits, lexicon)
    words = tuple(w for segment in segments for w in segment)
    if asked_out or _is_stop(words, lexicon):
        return "stop"
    if asked_in or _is_start(words, lexicon):
        return "start"
    if segments and not any(_clinical(f, lexicon) for f in findings):
        ends = (segments[0], segments[-1])
        if any(_is_stop(segment, lexicon) for segment in ends):
            return "stop"
        if any(_is_start(segment, lexicon) for segment in ends):
            return "start"
    leading = 0
    for word in words:
        if word not in _STOP_WORDS:
            break
        leading += 1
    return "stop" if leading >= 2 else None


def _is_stop(words: tuple[str, ...], lexicon: Lexicon) -> bool:
    return words in lexicon.optout_alone or (bool(words) and all(w in _STOP_WORDS for w in words))


def _is_start(words: tuple[str, ...], lexicon: Lexicon) -> bool:
    return words in lexicon.optin_alone or (bool(words) and all(w in _START_WORDS for w in words))


def _bare_segments(
    body: str, tokens: Sequence[Token], hits: Sequence[Hit], lexicon: Lexicon
) -> list[tuple[str, ...]]:
    """The words of the message less courtesy and a trailing signature, in the runs that punctuation and
    emoji separate."""
    cut = len(lexicon.strip_signature(body).rstrip())
    courtesy = [False] * len(tokens)
    for hit in hits:
        if hit.present and hit.term in lexicon.courtesy_concepts:
            for k in range(hit.start, hit.end):
                courtesy[k] = True
    segments: list[tuple[str, ...]] = []
    current: list[str] = []
    for k, tok in enumerate(tokens):
        if tok.start >= cut:
            break
        if not tok.norm[0].isalnum():
            if current:
                segments.append(tuple(current))
                current = []
            continue
        if not courtesy[k] and tok.norm not in lexicon.courtesy_words:
            current.append(tok.norm)
    if current:
        segments.append(tuple(current))
    return segments


def _max(a: str, b: str) -> str:
    return a if _rank(a) >= _rank(b) else b
