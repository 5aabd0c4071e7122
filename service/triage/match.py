"""Step 2 of triage — match — pure: no I/O.

Every phrase of the lexicon (concepts, qualifiers, cues, modifier triggers, terminators, opt-out/in
phrases) sits in one token trie, so a reply costs one pass over its tokens. Overlapping matches go to the
longest phrase wherever it starts: "can't breathe" is one airway phrase, so its "can't" is never read as
a negation; "not sure if" is a pseudo-trigger, so it neither negates nor makes a hypothetical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.core.enums import Severity
from service.triage.normalise import Token, is_digits
from service.triage.schema import SLOT

END = ""  # the trie key under which a node keeps its payloads (no token is ever empty)
# Between matches of equal length: what the patient reports first (the more serious reading first: "a
# cold sore" is a cold sore, not a cold), then pseudo-triggers, triggers, the rest.
_KIND_RANK = {"term": 4, "optout": 0, "optin": 0, "pseudo": 5, "trigger": 6}
_OTHER_RANK = 7

Payload = tuple[str, str]  # (kind, id): ("term", "pus"), ("trigger", "negation:forward"), ...


@dataclass(slots=True)
class Match:
    start: int  # token index, inclusive
    end: int  # token index, exclusive
    payloads: tuple[Payload, ...]


@dataclass
class PhraseTrie:
    """Normalised phrases → what they are. Built once per lexicon, then only read."""

    root: dict[str, Any] = field(default_factory=dict)

    def add(self, words: Sequence[str], payload: Payload) -> None:
        node = self.root
        for word in words:
            node = node.setdefault(word, {})
        existing = node.setdefault(END, ())
        if payload not in existing:
            node[END] = (*existing, payload)

    def rank(self, severity_of: Callable[[str, str], str | None]) -> None:
        """Store each phrase's payloads with their priority, so matching compares numbers only.
        ``severity_of(kind, id)`` is the severity of a concept, None for anything else."""

        def priority(kind: str, ident: str) -> int:
            severity = severity_of(kind, ident)
            if severity is not None:
                return 3 - Severity(severity).rank  # emergency 0 … none 3
            return _KIND_RANK.get(kind, _OTHER_RANK)

        def walk(node: dict[str, Any]) -> None:
            for key, child in node.items():
                if key == END:
                    node[END] = (min(priority(kind, ident) for kind, ident in child), child)
                else:
                    walk(child)

        walk(self.root)

    def match(self, tokens: Sequence[Token]) -> list[Match]:
        """Non-overlapping phrase matches, longest first wherever they start.

        A longer phrase hides the shorter ones inside it or overlapping it: "no puedo respirar" is airway,
        never "no" + "respirar"; "tengo temperatura" wins over the terminator "y tengo" that overlaps it.
        Between phrases of equal length, what the patient reports (concepts, opt-outs) beats pseudo-
        triggers, which beat triggers, which beat terminators. "{n}" in a phrase stands for any number.
        """
        n = len(tokens)
        candidates: list[tuple[int, int, int, tuple[Payload, ...]]] = []
        for i in range(n):
            node: dict[str, Any] | None = self.root
            j = i
            while node is not None and j < n:
                tok = tokens[j]
                following = node.get(tok.norm)
                if following is None and (tok.value is not None or is_digits(tok.norm)):
                    following = node.get(SLOT)
                node = following
                j += 1
                ranked = node.get(END) if node is not None else None
                if ranked:
                    candidates.append((j - i, ranked[0], i, ranked[1]))
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        taken = [False] * n
        matches: list[Match] = []
        for length, _, start, payloads in candidates:
            if not any(taken[start : start + length]):
                for k in range(start, start + length):
                    taken[k] = True
                matches.append(Match(start, start + length, payloads))
        matches.sort(key=lambda m: m.start)
        return matches
