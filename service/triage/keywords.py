"""Carrier compliance keywords — pure.

Fixed by carriers, not by the clinic, and acted on by the carrier whatever we do, so they are code, not
lexicon data: our own records must agree with what the carrier has already done. Twilio's list, with
REVOKE and OPTOUT since 2025-05-14 (docs/architecture.md#providers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from service.core.enums import Keyword

COMPLIANCE_KEYWORDS: Mapping[str, Keyword] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"), Keyword.STOP
    ),
    **dict.fromkeys(("START", "YES", "UNSTOP"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


def compliance_keyword(text: str) -> Keyword | None:
    """The keyword when the message is one carrier keyword alone, else None.

    Any case, surrounded by whitespace or punctuation ("Stop.", " STOP!! "), as carriers count it. A
    keyword inside a sentence is not one: "please stop the burning" is a symptom, "CANCEL my appointment"
    a rescheduling request (only single-word messages trigger the carriers' keywords).
    """
    bare = _EDGE_PUNCT.sub("", text.strip())
    return COMPLIANCE_KEYWORDS.get(bare.upper())
