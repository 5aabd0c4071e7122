"""Where a reply is triaged — pure: text in, severity, keyword and findings out.

Three steps, one module each: ``normalise`` (tokens through the shorthand, spelling, emoji and typo
tables), ``match`` (one phrase trie), ``decide`` (negation and other modifiers, day rules, combinations,
the highest severity present). The data is validated by one ``schema`` and compiled once by ``lexicon``;
``loader`` is the only part that reads files. ``evaluation`` scores the engine against labelled replies.
"""

from service.triage.decide import Finding, TriageResult, triage
from service.triage.keywords import COMPLIANCE_KEYWORDS, compliance_keyword
from service.triage.lexicon import Lexicon

__all__ = ["COMPLIANCE_KEYWORDS", "Finding", "Lexicon", "TriageResult", "compliance_keyword", "triage"]
