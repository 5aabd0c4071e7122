"""The new part of an email reply: quoted history and signatures removed before triage.

Our own aftercare text quoted back ("watch for pus or fever") must never raise an alarm, so triage reads
only what the patient wrote this time.
"""

from __future__ import annotations

import re

from mailparser_reply import EmailReplyParser

_parser = EmailReplyParser(languages=["en", "es"])

# mail-parser-reply 1.36 misses some attribution lines: its Spanish pattern wants two spaces before
# "escribió:", and a long English one wrapped over two lines escapes it too. What is left after it is cut
# at the first attribution line, and quoted lines ("> ...") are dropped.
_ATTRIBUTION = re.compile(r"(wrote|escribió|escribio)\s*:\s*$", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"^\s*(on|el)\s", re.IGNORECASE)


def new_text(body: str) -> str:
    text = _parser.parse_reply(text=body.replace("\r\n", "\n")) or ""
    kept: list[str] = []
    for line in text.split("\n"):
        if _ATTRIBUTION.search(line):
            if kept and _ATTRIBUTION_START.match(kept[-1]) and not _ATTRIBUTION_START.match(line):
                kept.pop()  # the first half of a wrapped "On ... <address> wrote:" line
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()
