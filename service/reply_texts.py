"""Fixed texts we answer patients with (HELP, opt-out confirmation, unknown sender, routine answers).

Data in ``templates/replies/<language>.toml``; placeholders are filled with the clinic's details.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from functools import cache
from typing import Any

from service.contact import display_phone
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


def _fill(text: str, clinic: Clinic) -> str:
    return text.format(
        clinic_name=clinic.name,
        clinic_phone=display_phone(clinic.sms_from),
        emergency_number=clinic.emergency_number,
    )


def notice(name: str, language: str, clinic: Clinic) -> str:
    """One of the fixed notices ("help", "opted_out", "unknown_sender"), ready to send as an SMS."""
    return fit_sms(_fill(_texts(language)[name], clinic))


def answer_for(concepts: Iterable[str], language: str, clinic: Clinic) -> str | None:
    """The care plan's answer to the first routine concept that has one, or None."""
    answers: dict[str, str] = _texts(language).get("answers", {})
    for concept in concepts:
        if concept in answers:
            return _fill(answers[concept], clinic)
    return None
