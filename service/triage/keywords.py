"""Carrier compliance keywords — pure.

Fixed by carriers, not by the clinic, and acted on by the carrier whatever we do, so they are code, not
lexicon data: our own records must agree with what the carrier has already done. Twilio's list, with
REVOKE and OPTOUT since 2025-05-14 (docs/architecture.md#providers).
"""

from __future__ import annotations

from collections.abc import Mapping

from service.core.enums import Keyword

COMPLIANCE_KEYWORDS: Mapping[str, Keyword] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"), Keyword.STOP
    ),
    **dict.fromkeys(("START", "YES", "UNSTOP"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}
# The longest keyword: a message whose text between its first and last letter or digit is longer than
# this is no keyword, whatever surrounds it.
_LONGEST = max(len(word) for word in COMPLIANCE_KEYWORDS)


def compliance_keyword(text: str) -> Keyword | None:
    """The keyword when the message is one carrier keyword alone, else None.

    Any case, surrounded by whitespace or punctuation ("Stop.", " STOP!! "), as carriers count it. A
    keyword inside a sentence is not one: "please stop the burning" is a symptom, "CANCEL my appointment"
    a rescheduling request (only single-word messages trigger the carriers' keywords).
    """
    # Linear in the text, whatever it holds: a regular expression stripping punctuation at both ends was
    # quadratic on a long run of punctuation (docs/benchmarks.md#text).
    start = next((i for i, c in enumerate(text) if c.isalnum()), None)
    if start is None:
        return None
    end = next(i for i in range(len(text) - 1, start - 1, -1) if text[i].isalnum()) + 1
    if end - start > _LONGEST:
        return None
    return COMPLIANCE_KEYWORDS.get(text[start:end].upper())
