"""The new part of an email reply: the reply parser (mail-parser-reply) removes the quoted history and
signature it recognises, in English and Spanish. Quoted lines it leaves (">" lines, attributions it misses)
are removed by triage's own quoted-text step (``templates/triage/normalise.toml`` [quoted]), the one place
that decides what a patient quoted rather than wrote."""

from __future__ import annotations

from mailparser_reply import EmailReplyParser

_parser = EmailReplyParser(languages=["en", "es"])


def new_text(body: str) -> str:
    return (_parser.parse_reply(text=body.replace("\r\n", "\n")) or "").strip()
