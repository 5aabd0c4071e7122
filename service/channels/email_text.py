"""The new part of an email reply: every line the patient wrote — above the quoted message, below it, or
between its quoted blocks — without the quoted history, the attribution lines that introduce it
("On Mon, … wrote:", Outlook's From/Sent block, "-----Original Message-----"), forwarded messages,
signatures and device footers (docs/architecture.md#the-new-words-of-an-email).

Line by line, so it is linear in the length of the message whatever the message holds: each line is
classified on at most ``MAX_LINE`` characters, and an attribution is recognised on a window of at most
``ATTRIBUTION_LINES`` lines. Where a case is ambiguous the text is kept: a symptom missed is worse than a
signature read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# What a line is classified on (a 1 MB line is still one line).
MAX_LINE = 1000
# The new words are looked for in the first this many characters of an email (about 30 pages): no reply
# is longer, and the work stays bounded whatever arrives. The whole email is kept for staff, and a longer
# one waits in the inbox for a person (service/replies/pipeline.py).
MAX_BODY = 100_000
# An attribution may be wrapped over this many lines ("On Tue, … John Smith" / "<john@…>" / "wrote:").
ATTRIBUTION_LINES = 5

_QUOTED = re.compile(r"[ \t]*>")
# Who wrote the quoted message, ending its line: "On <date>, <name> wrote:", "El … escribió:", "<a@b> wrote:",
# "---- John Smith wrote ----", "02.04.2012 … <bob@…> написал:". The window is short, so the lazy parts are
# bounded.
_VERBS = (
    r"wrote|sent|writes|escribi[oó]|escreveu|a [ée]crit|schrieb|schreef|skrev|kirjoitti|napisa[łl]|"
    r"написал[аи]?|пишет|ha scritto|יכתב|写道|작성"
)
_ATTRIBUTION = re.compile(
    r"(?:\b(?:on|el|le|am|em|op|den|il|w dniu)\b[^\n]{0,400}?|[^\s<>]+@[^\s<>]+>?\s*|[-]{2,}[^\n]{0,200}?)"
    rf"\b(?:{_VERBS})\b[ \t]*:?[ \t]*-*[ \t]*$",
    re.IGNORECASE,
)
# What every attribution holds: a verb of writing, or an address. A line without one cannot start a
# window that holds one — the cheap test that spares most lines the window's patterns.
_HINT = re.compile(rf"@|\b(?:{_VERBS})\b", re.IGNORECASE)
# "2014-10-17 11:28 GMT+03:00 Postmaster <postmaster@…>:" and "2011/4/7 Nathan <support@example.com>": a
# date, a name, an address, and nothing after.
_DATE_ADDRESS = re.compile(
    r"^[ \t]*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b[^\n]{0,300}?<?[^\s<>@]+@[^\s<>]+>"
    rf"[ \t]*(?:{_VERBS})?[ \t]*:?[ \t]*$",
    re.IGNORECASE,
)
# The start of a message that is not the patient's: an original or forwarded message's banner.
_RULE = r"(?:-{2,}|_{2,}|\*{2,})?"
_BANNER = re.compile(
    rf"^[ \t]*{_RULE}[ \t]*(?:original message|reply message|forwarded message|mensaje original|"
    r"mensaje reenviado|message d'origine|message transf[ée]r[ée]|urspr[üu]ngliche nachricht|"
    rf"weitergeleitete nachricht|oorspronkelijk bericht|mensagem original)[ \t]*{_RULE}[ \t]*:?[ \t]*$"
    r"|^[ \t]*begin forwarded message:?[ \t]*$",
    re.IGNORECASE,
)
_FORWARDED = re.compile(r"forward|reenviado|transf[ée]r|weitergeleitet", re.IGNORECASE)
# Outlook's header block ("From: …" then "Sent:", "To:", "Subject:" …), bold or not, in several languages.
_HEADER = re.compile(
    r"^[ \t]*\*?(?:from|de|von|van|fr[åa]n|fra|od|от|da)\*?[ \t]*:\*?[ \t]*\S", re.IGNORECASE
)
_HEADER_FOLLOWS = re.compile(
    r"^[ \t]*\*?(?:sent|date|to|subject|cc|enviado|fecha|para|asunto|envoy[ée]|[àa]|objet|gesendet|datum|"
    r"an|betreff|verzonden|aan|onderwerp|skickat|till|[äa]mne)\*?[ \t]*:",
    re.IGNORECASE,
)
# A signature: the "-- " delimiter, a mailing list's rule, or a device's footer.
_SIGNATURE_START = re.compile(r"^(?:--|-- |_{10,}|-{10,})[ \t]*$")
# A device's footer is a short line of its own: "Sent from my desk, is much easier" is the patient's.
_DEVICE_FOOTER = re.compile(
    r"^[ \t]*(?:sent from (?:my |samsung |yahoo |outlook |mail |windows )|sent with |get outlook for |"
    r"enviado desde (?:mi |el |outlook)|enviado do meu |envoy[ée] de mon |von meinem \w+ gesendet|"
    r"verzonden met |sent via )[^,;.!?\n]{0,60}(?:\([^()\n]{0,200}\))?[ \t]*$",
    re.IGNORECASE,
)
# A line of decoration framing a link (">>> http://… <<<") is no quote.
_FRAMED = re.compile(r"<<<[ \t]*$")
# What is left of a quoted line a link wrapped onto the next line: "_nonce=3dd518)", "(http://…) >".
_URL = re.compile(r"\(?\b(?:https?://|www\.)[^\s)]{1,2000}\)?")
_FRAGMENT = re.compile(r"^[ \t]*[^\s]*[=/&?()][^\s]*[ \t]*$")


def new_text(body: str) -> str:
    """What the patient newly wrote in an email reply."""
    lines = body[:MAX_BODY].replace("\r\n", "\n").replace("\r", "\n").split("\n")
    hints = [bool(_HINT.search(line[:MAX_LINE])) for line in lines]
    kept: list[str] = []
    signature: list[str] = []
    in_signature = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line or line.isspace():  # most lines of a long email: nothing to classify
            (signature if in_signature else kept).append(line)
            index += 1
            continue
        head = line[:MAX_LINE]
        if _QUOTED.match(head) and not _FRAMED.search(head) or _wrapped_quote(lines, index):
            in_signature = False  # an interleaved answer may follow the quoted block
            index += 1
            continue
        if _BANNER.match(head):
            if _FORWARDED.search(head):
                # A message forwarded to us ("FYI" and what a doctor wrote them): what was forwarded is
                # what they want us to read.
                return _tidy(kept + lines[index:])
            break
        if _outlook_block(lines, index):
            break
        span, lead = _attribution(lines, index) if any(hints[index : index + ATTRIBUTION_LINES]) else (0, "")
        if span:
            if lead:
                kept.append(lead)  # "reply On Wed, … wrote:": the reply shares the line
            after = index + span
            if not _quote_follows(lines, after):
                break  # no quote marks: everything below is the earlier message
            index = after
            continue
        if _SIGNATURE_START.match(head) or _DEVICE_FOOTER.match(head):
            in_signature = True
        if in_signature:
            signature.append(line)
        else:
            kept.append(line)
        index += 1
    # Nothing but a signature: it is all the sender wrote, so it is read.
    return _tidy(kept) if _has_words(kept) else _tidy(kept + signature)


def _attribution(lines: Sequence[str], index: int) -> tuple[int, str]:
    """How many lines the attribution starting on line ``index`` spans (0: none starts there), and any
    text written before it on that line ("reply On Wed, … wrote:")."""
    first = lines[index][:MAX_LINE]
    window = ""
    for count in range(1, ATTRIBUTION_LINES + 1):
        if index + count > len(lines):
            break
        line = lines[index + count - 1][:MAX_LINE]
        if not line.strip():
            if count == 1:
                break
            continue  # a wrapped attribution may hold a blank line (polymail)
        # A wrapped attribution's last piece may carry a quote mark ("> wrote:", polymail).
        window = f"{window} {line.strip().lstrip('>').strip()}" if window else line.strip()
        if len(window) > 600:
            break
        found = _DATE_ADDRESS.match(window) or _ATTRIBUTION.search(window)
        # It must begin on this line: text above an attribution is the patient's. Begun mid-line, it is
        # "… On Wed, 4 Apr …" with a capital, never "(on your Mac …".
        if (
            found
            and found.start() < len(first.strip())
            and (found.start() == 0 or _capital(window, found.start()))
        ):
            lead = window[: found.start()].rstrip(" \t-")
            return count, lead if any(c.isalnum() for c in lead) else ""
    return 0, ""


def _capital(window: str, start: int) -> bool:
    """An attribution begun mid-line starts with a capital ("reply On Wed, …") or an address ("Sent from
    Samsung MobileName <a@b.com> wrote:")."""
    word = window[start:].lstrip(" \t-")
    return bool(word) and (word[0].isupper() or word[0].isdigit() or "@" in word.split(maxsplit=1)[0])


def _quote_follows(lines: Sequence[str], index: int) -> bool:
    """The attribution introduces ">" quoting (text after the quoted block is the patient's again)."""
    for line in lines[index : index + 3]:
        if line.strip():
            return bool(_QUOTED.match(line[:MAX_LINE]))
    return True  # nothing after it


def _outlook_block(lines: Sequence[str], index: int) -> bool:
    """A "From: …" (or "Date: …") line followed within a few lines by "Sent:", "To:", "Subject:": the
    header block of a quoted message."""
    line = lines[index][:MAX_LINE]
    if not (_HEADER.match(line) or _HEADER_FOLLOWS.match(line)):
        return False
    return any(_HEADER_FOLLOWS.match(line[:MAX_LINE]) for line in lines[index + 1 : index + 6])


def _wrapped_quote(lines: Sequence[str], index: int) -> bool:
    """A line with no quote mark inside a quoted block that is only what a wrapped link left over: the
    quote's, not an answer between quotes (an answer, even "yes", has words of its own)."""
    if index == 0 or index + 1 >= len(lines):
        return False
    before, line, after = (lines[i][:MAX_LINE] for i in (index - 1, index, index + 1))
    if not (_QUOTED.match(before) and _QUOTED.match(after)):
        return False
    words = _URL.sub(" ", line).replace(">", " ")
    return bool(_FRAGMENT.match(line)) or not any(c.isalnum() for c in words)


def _has_words(lines: Sequence[str]) -> bool:
    return any(any(c.isalnum() for c in line[:MAX_LINE]) for line in lines)


def _tidy(lines: Sequence[str]) -> str:
    """Trailing spaces off, no more than one blank line in a row, no blank lines around."""
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip()
