"""Text as it comes from a provider, made safe to store: a NUL byte (which PostgreSQL's text columns
refuse, so a message holding one was a 500 on every retry and never stored) and lone surrogates (left by
invalid UTF-8) become U+FFFD, the replacement character. Everything else — other control characters,
bidirectional and zero-width marks, emoji — is kept as it came; triage reads through them."""

from __future__ import annotations

import re

# One pass, linear: NUL and the UTF-16 surrogate range, which no valid text holds alone.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)
