"""Render a care-plan message for one channel and language, and count what an SMS will cost.

Templates live in ``templates/messages/<language>/`` (one Jinja2 environment per language, so a Spanish
template can never pull in an English footer). A message is three files:

    <name>.sms.j2          the SMS text; extends ``_sms.j2`` (clinic name first, optional footer, STOP notice)
    <name>.subject.j2      the email subject, one line
    <name>.content.j2      the email copy: sets ``title`` and ``body``, written once for both email parts

The renderer puts the copy into an email layout, one file per part: ``<layout>.txt.j2`` (plain text) and
``<layout>.html.j2`` (HTML), with the copy as ``content``. The layout is ``_email`` (a patient's email:
the full safety footer, ``_footer.j2``, docs/clinical-basis.md#schedule, and the unsubscribe link) unless
the copy names another with a constant at its top level, as pages to staff do::

    {% set layout = "_staff_email" %}

which is also how a message that truly needs an email of its own gets one: it names its own pair of layout
files. The name is read from the copy's source, so the start-up check knows which layout a message needs
without rendering it (docs/templates.md).

The email copy's ``body`` is light markup: paragraphs separated by blank lines, lines starting with "- "
are a list, a line starting with "## " is a heading. The layouts turn it into text or HTML.

Context every template receives (all required; a missing one is an error, never an empty gap in a message
a patient reads — hence StrictUndefined):

    first_name          the patient's first name
    clinic_name         the clinic's name
    clinic_phone        the clinic's number as patients write it, e.g. "(555) 010-1234"
    emergency_number    "911", "999", "112", ... (per clinic)
    treatment           the treatment key: "microneedling", "microneedling_prp", "rf_microneedling"; the
                        shared templates branch on it where care differs (PRP: no washing; RF: swelling)
    treatment_label     the treatment's name in the patient's language (from the plan's labels)
    include_stop_notice True on the first SMS a patient gets: it carries "Reply STOP to opt out."
    unsubscribe_url     the patient's one-click unsubscribe link (email)
    step                the plan step id, e.g. "day3_warning"
    starts_at_local     the appointment time, formatted in the patient's timezone and language by the
                        caller (``core.timezones.format_local``), e.g. "Tue, Dec 3, 10:00"

SMS bodies carry the minimum personal health information (docs/architecture.md#invariants): no treatment
name, no findings.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    nodes,
)

from service.core.plan_files import TEMPLATE_NAME_PATTERN
from service.settings import PROJECT_ROOT

MESSAGES_DIR = PROJECT_ROOT / "templates" / "messages"
DEFAULT_LANGUAGE = "en"
CHANNELS = ("sms", "email")
# The languages a booking may ask for (service.api.schemas.Language). Each needs every template a plan
# names: a patient whose language lacks one gets nothing, since a missing Spanish template does not fall
# back to English.
PATIENT_LANGUAGES = ("en", "es")

# A message's own files, by channel (each may extend, include or import others). An email also needs
# its layout's two parts (``email_layout``).
_PARTS = {"sms": ("sms",), "email": ("subject", "content")}
DEFAULT_EMAIL_LAYOUT = "_email"
# The variable a message's copy sets to choose its email layout, and the shape of a layout's name: a
# partial (leading "_") that cannot walk out of the language's folder.
_LAYOUT_VARIABLE = "layout"
_LAYOUT_NAME = re.compile(r"^_[a-z0-9_]+$")

# Template names come from plan files; refuse anything that could walk out of the templates directory.
_TEMPLATE_NAME = re.compile(TEMPLATE_NAME_PATTERN)


@dataclass(frozen=True)
class Rendered:
    body: str  # the SMS text, or the email's plain-text part
    subject: str | None  # email only
    html: str | None  # email only


@dataclass(frozen=True)
class Block:
    """One block of email copy: a paragraph ("p"), a heading ("h") or a list ("ul")."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()


# ---- GSM-7 and segments ---------------------------------------------------------------------------------

# GSM 03.38 default alphabet (ESC, 0x1B, is left out: it only introduces the extension table).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs two septets (ESC + the character).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7 = "GSM-7"
UCS2 = "UCS-2"
MAX_SMS_SEGMENTS = 2

# Characters that creep into templates and names from word processors, with their GSM-7 stand-ins.
_GSM7_STAND_INS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2026": "...", "\u2022": "-", "\u00b7": "-",
    "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u202f": " ", "\u200b": "",
}  # fmt: skip


def _is_gsm7(char: str) -> bool:
    return char in GSM7_BASIC or char in GSM7_EXTENSION


def sms_segments(text: str) -> tuple[str, int]:
    """The encoding an SMS will be sent in and how many segments (billed messages) it takes.

    GSM-7: 160 septets in one segment, 153 each when split (the rest is the concatenation header);
    extension-table characters ({ } [ ] ~ | ^ € \\) take two. Anything else forces UCS-2 for the whole
    message: 70 UTF-16 code units in one segment, 67 each when split (an emoji takes two). An escape pair
    or a surrogate pair is never split across segments, as carriers do. Empty text: 0 segments.
    """
    if all(_is_gsm7(c) for c in text):
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return GSM7, _count_segments(costs, single=160, multi=153)
    costs = [len(c.encode("utf-16-le")) // 2 for c in text]
    return UCS2, _count_segments(costs, single=70, multi=67)


def _count_segments(costs: list[int], *, single: int, multi: int) -> int:
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return segments


def to_gsm7(text: str) -> str:
    """Replace characters outside GSM-7 with a GSM-7 near-equivalent where there is one (á→a, ’→').

    Characters that are GSM-7 stay as they are: ñ é ü ¿ ¡ à are in the alphabet, so Spanish keeps them.
    Characters with no stand-in (an emoji) stay too, and the text stays UCS-2.
    """
    out: list[str] = []
    for char in text:
        if _is_gsm7(char):
            out.append(char)
        elif char in _GSM7_STAND_INS:
            out.append(_GSM7_STAND_INS[char])
        else:
            # NFKD splits á into a + combining accent (and º into o); keep the GSM-7 part if that is all.
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base and all(_is_gsm7(c) for c in base) else char)
    return "".join(out)


def fit_sms(text: str) -> str:
    """The SMS as sent: unchanged when it fits, else with accents dropped so it fits two GSM-7 segments.

    Why: one non-GSM-7 character (á í ó ú in Spanish, a curly apostrophe) makes the whole message UCS-2,
    which halves the segment size (70 instead of 160) and so doubles the price and the number of parts a
    phone has to stitch together. Readers of Spanish read unaccented SMS without trouble; it is how most
    Spanish texts are typed. So when the accented text would take more than two UCS-2 segments, the
    accents go. Text that fits as it is keeps its accents.
    """
    encoding, segments = sms_segments(text)
    if encoding == UCS2 and segments > MAX_SMS_SEGMENTS:
        return to_gsm7(text)
    return text


# ---- Whitespace ------------------------------------------------------------------------------------------

_BLANK_LINE = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"\s+")


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each collapsed onto one line."""
    return [p for p in (_SPACES.sub(" ", chunk).strip() for chunk in _BLANK_LINE.split(text)) if p]


def sms_text(rendered: str) -> str:
    """Template output → SMS text: each paragraph on one line, paragraphs on separate lines.

    Template line breaks are for the people editing them; in an SMS every character counts, and a single
    newline between paragraphs costs no more than a space.
    """
    return "\n".join(_paragraphs(rendered))


def one_line(rendered: str) -> str:
    return _SPACES.sub(" ", rendered).strip()


def email_blocks(copy: str) -> list[Block]:
    """Email copy → blocks: blank lines separate paragraphs, "- " starts a list item, "## " a heading."""
    blocks: list[Block] = []
    for chunk in _BLANK_LINE.split(copy.strip()):
        paragraph: list[str] = []
        items: list[str] = []
        for raw in chunk.splitlines():
            line = _SPACES.sub(" ", raw).strip()
            if not line:
                continue
            if line.startswith("## ") or (line.startswith("- ") and paragraph):
                _flush(blocks, paragraph, items)
            if line.startswith("## "):
                blocks.append(Block("h", text=line[3:]))
            elif line.startswith("- "):
                items.append(line[2:])
            elif items:
                items[-1] += " " + line  # a list item wrapped onto the next line
            else:
                paragraph.append(line)
        _flush(blocks, paragraph, items)
    return blocks


def _flush(blocks: list[Block], paragraph: list[str], items: list[str]) -> None:
    if paragraph:
        blocks.append(Block("p", text=" ".join(paragraph)))
        paragraph.clear()
    if items:
        blocks.append(Block("ul", items=tuple(items)))
        items.clear()


def _tidy_email_text(rendered: str) -> str:
    lines = [line.rstrip() for line in rendered.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


# ---- Environments ----------------------------------------------------------------------------------------


def _autoescape(name: str | None) -> bool:
    # Only the HTML part is escaped: a first name like "Ana <3" must not become "Ana &lt;3" in a text.
    # (select_autoescape looks at the last extension, which is ".j2" for every file here.)
    return name is not None and name.endswith(".html.j2")


@cache
def _environment(language: str, messages_dir: Path = MESSAGES_DIR) -> Environment:
    env = Environment(
        loader=FileSystemLoader(messages_dir / language),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,  # templates ship with the code: no stat() of the file at every send
    )
    env.filters["email_blocks"] = email_blocks
    return env


@cache
def available_languages(messages_dir: Path = MESSAGES_DIR) -> tuple[str, ...]:
    # Read once per process: the directory ships with the code and is looked up on every render.
    return tuple(
        sorted(p.name for p in messages_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    )


def resolve_language(language: str, messages_dir: Path = MESSAGES_DIR) -> str:
    """'es', 'es-MX', 'ES_us' → 'es'; a language we have no templates for → English."""
    primary = (language or "").strip().lower().replace("_", "-").split("-")[0]
    return primary if primary in available_languages(messages_dir) else DEFAULT_LANGUAGE


def template_names(language: str = DEFAULT_LANGUAGE, messages_dir: Path = MESSAGES_DIR) -> list[str]:
    """The message templates a language has (those with an SMS part; partials start with "_")."""
    directory = messages_dir / resolve_language(language, messages_dir)
    return sorted(p.name.removesuffix(".sms.j2") for p in directory.glob("[!_]*.sms.j2"))


def render(template: str, channel: str, language: str, context: dict[str, Any]) -> Rendered:
    """Render one message. Raises ValueError for an unknown channel or a malformed template name,
    jinja2.TemplateNotFound for a template the language lacks, jinja2.UndefinedError for missing context."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
    if not _TEMPLATE_NAME.match(template):
        raise ValueError(f"malformed template name {template!r}")
    env = _environment(resolve_language(language))
    if channel == "sms":
        (sms,) = template_files(template, channel)
        body = sms_text(env.get_template(sms).render(context))
        return Rendered(body=fit_sms(body), subject=None, html=None)
    subject_file, content_file = template_files(template, channel)
    subject = one_line(env.get_template(subject_file).render(context))
    # The copy is evaluated once, unescaped (its name is not .html.j2); the HTML layout escapes it as it
    # prints it, as it did when each message imported its copy into its own layout file.
    content = env.get_template(content_file).make_module(context)
    layout = email_layout(env, template)
    with_content = {**context, "content": content}
    text = _tidy_email_text(env.get_template(f"{layout}.txt.j2").render(with_content))
    html = env.get_template(f"{layout}.html.j2").render(with_content).strip() + "\n"
    return Rendered(body=text, subject=subject, html=html)


@cache
def email_layout(env: Environment, template: str) -> str:
    """The email layout ``template``'s copy names (``{% set layout = "_staff_email" %}``), or ``_email``.

    Read from the source, not from a rendering, so the start-up check can follow it. Raises
    TemplateSyntaxError when the copy sets ``layout`` in any other way (inside a block or a condition, to
    a computed value, more than once, to a name that is not a partial): which layout a message uses must
    not depend on the context. Cached: templates ship with the code (``auto_reload=False``).
    """
    name = f"{template}.content.j2"
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]  # _environment gives one
    parsed = env.parse(source, name)
    stores = [n for n in parsed.find_all(nodes.Name) if n.name == _LAYOUT_VARIABLE and n.ctx == "store"]
    if not stores:
        return DEFAULT_EMAIL_LAYOUT
    # The one store of ``layout`` must be a plain top-level ``{% set layout = ... %}``.
    settings = [
        node
        for node in parsed.body
        if isinstance(node, nodes.Assign)
        and isinstance(node.target, nodes.Name)
        and node.target.name == _LAYOUT_VARIABLE
    ]
    setting = settings[0] if len(stores) == 1 and settings else None
    value = setting.node.value if setting and isinstance(setting.node, nodes.Const) else None
    if not (isinstance(value, str) and _LAYOUT_NAME.match(value)):
        lineno = setting.lineno if setting else stores[0].lineno
        raise TemplateSyntaxError(
            'the email layout is set once, at the top level, to a constant partial name: '
            '{% set layout = "_staff_email" %}',
            lineno,
            name,
        )
    return value


# ---- Checks ----------------------------------------------------------------------------------------------


def template_files(template: str, channel: str) -> tuple[str, ...]:
    """A message's own files for ``channel``, in a language's folder: the SMS text; the email subject and
    copy. An email also renders its layout (``email_layout``), which ``template_problem`` follows too."""
    return tuple(f"{template}.{part}.j2" for part in _PARTS[channel])


def languages_to_check(messages_dir: Path = MESSAGES_DIR) -> tuple[str, ...]:
    """Every language a template must exist in: those a booking may ask for, and any other we ship."""
    shipped = available_languages(messages_dir) if messages_dir.is_dir() else ()
    return tuple(sorted(set(PATIENT_LANGUAGES) | set(shipped)))


def template_problem(
    template: str, channel: str, language: str, messages_dir: Path = MESSAGES_DIR
) -> str | None:
    """Why ``render`` would fail for this template, channel and language whatever the context, or None.

    A malformed name; a file missing (the message's own, its email layout, or a layout, partial or copy any
    of them extends, includes or imports, followed to the end); a file that does not compile (Jinja syntax,
    an unknown filter); an email layout named in a way ``email_layout`` refuses. Each is as broken as the
    next: the message would never go. Missing context is not checked: it depends on the message, and
    StrictUndefined refuses it at render time.
    """
    if channel not in _PARTS:
        return f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}"
    if not _TEMPLATE_NAME.match(template):
        return f"malformed template name {template!r}"
    env = _environment(language, messages_dir)
    loader = env.loader
    assert loader is not None  # _environment always gives one
    pending: list[tuple[str, str | None]] = [(name, None) for name in template_files(template, channel)]
    seen: set[str] = set()
    while pending:
        name, used_by = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        shown = f"{messages_dir.name}/{language}/{name}"
        try:
            source, _, _ = loader.get_source(env, name)
            parsed = env.parse(source, name)
            # None: a name computed at render time, which no check before rendering can follow.
            referenced = [ref for ref in meta.find_referenced_templates(parsed) if ref is not None]
            env.compile(parsed, name)  # what the first render would raise: an unknown filter, a bad block
            if name == f"{template}.content.j2":
                layout = email_layout(env, template)
                referenced += [f"{layout}.txt.j2", f"{layout}.html.j2"]
        except TemplateNotFound:
            return f"no template {shown}" + (f" (used by {used_by})" if used_by else "")
        except TemplateSyntaxError as exc:
            return f"template {shown} does not compile: {one_line(exc.message or '')} (line {exc.lineno})"
        pending.extend((ref, shown) for ref in referenced)
    return None
