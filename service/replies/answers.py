"""Fixed texts we answer patients with (HELP, opt-out confirmation, unknown sender, routine answers).

Data in ``templates/replies/<language>.toml``; placeholders are filled with the clinic's details.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from functools import cache
from typing import Any

from service.core.phones import display_phone
from service.models import Clinic
from service.rendering import fit_sms
from service.settings import PROJECT_ROOT

REPLIES_DIR = PROJECT_ROOT / "templates" / "replies"
LANGUAGES = ("en", "es")


@cache
def _texts(language: str) -> dict[str, Any]:
    language = language if language in LANGUAGES else "en"
    with open(REPLIES_DIR / f"{language}.toml", "rb") as handle:
        return tomllib.load(handle)


def _fill(text: str, clinic: Clinic, emergency_number: str | None = None) -> str:
    return text.format(
        clinic_name=clinic.name,
        clinic_phone=display_phone(clinic.sms_from),
        emergency_number=emergency_number or clinic.emergency_number,
    )


def notice(name: str, language: str, clinic: Clinic, *, emergency_number: str | None = None) -> str:
    """One of the fixed notices ("help", "opted_out", "unknown_sender"), ready to send as an SMS;
    ``emergency_number`` is the patient's country's, when we know the patient."""
    return fit_sms(_fill(_texts(language)[name], clinic, emergency_number))


def _plain(text: str) -> str:
    """Lower case without accents, so "maquíllate" finds "maquillar"-family words written either way."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@cache
def _answer_patterns(language: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple(
        (
            re.compile(r"\b(?:" + "|".join(re.escape(_plain(w)) for w in entry["words"]) + r")\b"),
            entry["text"],
        )
        for entry in _texts(language).get("answers", [])
    )


def answer_for(text: str, language: str, clinic: Clinic) -> str | None:
    """The care plan's answer to a routine question, by the first topic whose words the message uses."""
    plain = _plain(text)
    for pattern, answer in _answer_patterns(language):
        if pattern.search(plain):
            return _fill(answer, clinic)
    return None
