"""Message templates: every one renders, SMS stay short and cheap, every email carries the safety footer."""

from __future__ import annotations

import html
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import UndefinedError

from service.rendering import (
    GSM7,
    GSM7_BASIC,
    GSM7_EXTENSION,
    MESSAGES_DIR,
    UCS2,
    _environment,
    email_layout,
    fit_sms,
    render,
    sms_segments,
    template_files,
    template_names,
    to_gsm7,
)
from service.scheduling.care_plans import available_treatments, load_plan

LANGUAGES = ["en", "es"]
TREATMENTS = available_treatments()
PLAN_TEMPLATES = sorted({s.template for t in TREATMENTS for s in load_plan(t).steps})
# Our answers to a patient's message, by severity (rendered for SMS replies and email answers).
REPLY_TEMPLATES = [
    "notice",
    "opt_out_confirm",
    "reply_acknowledged",
    "reply_emergency",
    "reply_routine",
    "reply_urgent",
    "staff_reply",
]
ALL_TEMPLATES = sorted(PLAN_TEMPLATES + REPLY_TEMPLATES)  # everything a patient reads
STAFF_TEMPLATES = ["page"]  # what staff read
# The steps whose SMS carry the short safety footer: the day-0 instructions (allergy red flags) and the
# day-2/3 infection and cold-sore warning.
WARNING_TEMPLATES = ["post_immediate", "day3_warning", "day3_healing_check"]

LONG_CLINIC = "Northside Skin & Laser Clinic!"  # 30 characters
PHONE = "(555) 010-1234"
UNSUBSCRIBE = "https://aftercare.example/unsubscribe/42.5f2c9a0e1b7d4c3a"
WHEN = {"en": "Tue, Dec 3, 10:00", "es": "mar, 3 dic, 10:00"}  # as format_local writes them

SHORT_FOOTER = {
    "en": f"Trouble breathing? Call 911. Pus, fever or spreading redness? Reply or call us {PHONE}.",
    "es": f"¿Falta de aire? Llame al 911. ¿Pus, fiebre o rojez que se extiende? Responda o llame al {PHONE}.",
}
STOP_NOTICE = {"en": "Reply STOP to opt out.", "es": "Responda STOP para darse de baja."}
FULL_FOOTER = {
    "en": [
        "Trouble breathing, swelling of lips/tongue/throat, or fainting? Call 911 now.",
        f"Pus, fever, spreading redness or blisters? Call us today at {PHONE}.",
    ],
    "es": [
        "¿Le cuesta respirar, se le hinchan los labios, la lengua o la garganta, o se desmaya? "
        "Llame al 911 ahora.",
        f"¿Pus, fiebre, enrojecimiento que se extiende o ampollas? Llámenos hoy al {PHONE}.",
    ],
}


def context(language: str = "en", treatment: str = "microneedling", **overrides: Any) -> dict[str, Any]:
    plan = load_plan(treatment)
    values: dict[str, Any] = {
        "first_name": "Guadalupe",
        "clinic_name": LONG_CLINIC,
        "clinic_phone": PHONE,
        "emergency_number": "911",
        "treatment": treatment,
        "treatment_label": plan.label(language),
        "include_stop_notice": True,
        "unsubscribe_url": UNSUBSCRIBE,
        "step": "day3_warning",
        "starts_at_local": WHEN[language],
        "staff_paged": True,
        "text": "We can see you on Friday at 10. Call us with any question.",
    }
    return values | overrides


def plain(text: str) -> str:
    """Lower case and accents dropped, so a check does not depend on whether an SMS kept its accents."""
    return to_gsm7(text).lower().replace("é", "e")


every_message = pytest.mark.parametrize(
    ("template", "language", "treatment"),
    [(t, lang, tr) for t in ALL_TEMPLATES for lang in LANGUAGES for tr in TREATMENTS],
)


# ---- Completeness --------------------------------------------------------------------------------------


def test_both_languages_have_a_template_for_every_plan_step_and_reply() -> None:
    assert template_names("en") == sorted(ALL_TEMPLATES + STAFF_TEMPLATES)
    assert template_names("es") == sorted(ALL_TEMPLATES + STAFF_TEMPLATES)


MESSAGE_FILES = ("content", "sms", "subject")  # all a message is: the email's layout is the renderer's


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_message_is_its_copy_sms_and_subject_and_nothing_else(language: str) -> None:
    # Fails if a per-message email file (``<name>.email.html.j2``, a stub that only put the copy into a
    # layout) came back: it would be ignored, and whoever edited it would wonder why nothing changed.
    folder = MESSAGES_DIR / language
    names = template_names(language)
    expected = {f"{name}.{part}.j2" for name in names for part in MESSAGE_FILES}
    assert sorted(p.name for p in folder.glob("[!_]*")) == sorted(expected)
    for name in names:
        assert template_files(name, "email") == (f"{name}.subject.j2", f"{name}.content.j2")


@pytest.mark.parametrize("language", LANGUAGES)
def test_patient_messages_get_the_patient_layout_and_pages_the_staff_layout(language: str) -> None:
    environment = _environment(language)
    assert {name: email_layout(environment, name) for name in template_names(language)} == (
        {name: "_email" for name in ALL_TEMPLATES} | {"page": "_staff_email"}
    )


@every_message
@pytest.mark.parametrize("channel", ["sms", "email"])
def test_every_template_renders_with_a_full_context(
    template: str, language: str, treatment: str, channel: str
) -> None:
    rendered = render(template, channel, language, context(language, treatment))
    assert rendered.body.strip()
    if channel == "email":
        assert rendered.subject and "\n" not in rendered.subject
        assert rendered.html and rendered.html.lstrip().startswith("<!DOCTYPE html>")
    else:
        assert rendered.subject is None and rendered.html is None


@pytest.mark.parametrize("channel", ["sms", "email"])
def test_a_missing_context_variable_is_an_error_not_a_gap_in_the_message(channel: str) -> None:
    incomplete = context()
    del incomplete["first_name"]
    with pytest.raises(UndefinedError):
        render("day3_warning", channel, "en", incomplete)


def test_an_unknown_language_falls_back_to_english() -> None:
    assert render("day1_checkin", "sms", "fr", context()) == render("day1_checkin", "sms", "en", context())


def test_a_regional_spanish_code_gets_the_spanish_templates() -> None:
    es = context("es")
    assert render("day1_checkin", "sms", "es-MX", es) == render("day1_checkin", "sms", "es", es)


def test_an_unknown_channel_or_a_path_as_template_name_is_refused() -> None:
    with pytest.raises(ValueError, match="channel"):
        render("day1_checkin", "fax", "en", context())
    with pytest.raises(ValueError, match="template"):
        render("../en/_sms", "sms", "en", context())


# ---- SMS -----------------------------------------------------------------------------------------------


@every_message
@pytest.mark.parametrize("stop", [True, False])
def test_every_sms_fits_in_two_segments_even_for_a_long_clinic_name(
    template: str, language: str, treatment: str, stop: bool
) -> None:
    body = render(template, "sms", language, context(language, treatment, include_stop_notice=stop)).body
    encoding, segments = sms_segments(body)
    assert segments <= 2, f"{encoding}, {segments} segments, {len(body)} characters: {body!r}"


@pytest.mark.parametrize("template", ALL_TEMPLATES)
@pytest.mark.parametrize("treatment", TREATMENTS)
def test_english_sms_are_gsm7(template: str, treatment: str) -> None:
    assert sms_segments(render(template, "sms", "en", context("en", treatment)).body)[0] == GSM7


@every_message
def test_sms_are_plain_single_spaced_text(template: str, language: str, treatment: str) -> None:
    body = render(template, "sms", language, context(language, treatment)).body
    assert body == body.strip()
    assert "  " not in body and "\n\n" not in body and " \n" not in body
    assert "<" not in body and "{" not in body


@every_message
def test_sms_name_no_treatment(template: str, language: str, treatment: str) -> None:
    # Minimum health information on a lock screen: the patient knows what they had done.
    body = render(template, "sms", language, context(language, treatment)).body.lower()
    assert "microneedling" not in body and "prp" not in body and "radiofrec" not in body


@pytest.mark.parametrize("template", WARNING_TEMPLATES)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("treatment", TREATMENTS)
def test_warning_step_sms_carry_the_short_safety_footer(template: str, language: str, treatment: str) -> None:
    body = render(template, "sms", language, context(language, treatment, include_stop_notice=False)).body
    assert plain(SHORT_FOOTER[language]) in plain(body)


def test_the_short_footer_uses_the_clinics_emergency_number() -> None:
    body = render("day3_warning", "sms", "en", context(emergency_number="999")).body
    assert "Call 999." in body and "911" not in body


@pytest.mark.parametrize("template", ALL_TEMPLATES)
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_stop_notice_appears_only_when_asked_for(template: str, language: str) -> None:
    first = render(template, "sms", language, context(language, include_stop_notice=True)).body
    later = render(template, "sms", language, context(language, include_stop_notice=False)).body
    assert first.endswith(STOP_NOTICE[language])
    assert "STOP" not in later


def test_the_sms_starts_with_the_clinic_name_so_the_patient_knows_who_is_writing() -> None:
    assert render("day1_checkin", "sms", "en", context()).body.startswith(f"{LONG_CLINIC}: Hi Guadalupe,")


def test_a_long_spanish_sms_drops_only_the_accents_gsm7_lacks() -> None:
    body = render("day3_warning", "sms", "es", context("es")).body
    assert sms_segments(body) == (GSM7, 2)
    assert "Avisenos" in body and "Avísenos" not in body
    assert "¿Falta de aire?" in body  # ¿ is GSM-7 and stays


# ---- Segments and GSM-7 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (GSM7, 0)),
        ("a" * 160, (GSM7, 1)),
        ("a" * 161, (GSM7, 2)),
        ("a" * 306, (GSM7, 2)),
        ("a" * 307, (GSM7, 3)),
        ("€" * 80, (GSM7, 1)),  # extension-table characters take two septets each
        ("€" * 81, (GSM7, 2)),
        ("ñandú", (UCS2, 1)),  # ú is not GSM-7
        ("á" * 70, (UCS2, 1)),
        ("á" * 71, (UCS2, 2)),
        ("á" * 134, (UCS2, 2)),
        ("á" * 135, (UCS2, 3)),
        ("😀" * 35, (UCS2, 1)),  # an emoji is two UTF-16 code units
        ("😀" * 36, (UCS2, 2)),
    ],
)
def test_sms_segments_follow_the_carriers_arithmetic(text: str, expected: tuple[str, int]) -> None:
    assert sms_segments(text) == expected


def test_the_gsm7_alphabet_has_all_its_characters() -> None:
    # 128 code points less ESC; a character lost here would silently double the price of some SMS.
    assert len(GSM7_BASIC) == 127 and len(GSM7_EXTENSION) == 10
    assert set("ÄÖÑÜ§¿äöñüàÉé¡") <= GSM7_BASIC
    assert not set("áíóúÁÍÓÚç`") & GSM7_BASIC


def test_an_escape_pair_is_not_split_across_segments() -> None:
    # 152 plain characters then "€": the pair would straddle the 153-septet boundary, so it moves.
    assert sms_segments("a" * 152 + "€" + "a" * 152) == (GSM7, 3)


def test_to_gsm7_replaces_only_characters_outside_gsm7() -> None:
    assert to_gsm7("Á á é í ó ú ñ ü ¿ ¡ à ’ “x” – …") == 'A a é i o u ñ ü ¿ ¡ à \' "x" - ...'


def test_fit_sms_leaves_a_short_accented_text_alone() -> None:
    assert fit_sms("¿Cómo está?") == "¿Cómo está?"


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz áéíóúñü¿?¡!.,ÁÉÍÓÚ\n", max_size=400))
def test_fitting_an_sms_never_makes_it_cost_more(text: str) -> None:
    assert sms_segments(fit_sms(text))[1] <= sms_segments(text)[1]
    if sms_segments(text)[1] > 2:
        assert sms_segments(fit_sms(text))[0] == GSM7


# ---- Email ---------------------------------------------------------------------------------------------


@every_message
def test_every_email_carries_the_full_safety_footer_and_the_unsubscribe_link(
    template: str, language: str, treatment: str
) -> None:
    rendered = render(template, "email", language, context(language, treatment))
    assert rendered.html is not None
    for line in FULL_FOOTER[language]:
        assert line in rendered.body
        assert html.escape(line, quote=False) in rendered.html
    assert UNSUBSCRIBE in rendered.body
    assert f'href="{UNSUBSCRIBE}"' in rendered.html
    assert "STOP" not in rendered.body


def test_the_html_part_escapes_what_the_patient_typed_and_the_text_part_does_not() -> None:
    rendered = render("day1_checkin", "email", "en", context(first_name="Ana <b>&"))
    assert rendered.html is not None
    assert "Ana &lt;b&gt;&amp;" in rendered.html and "<b>&" not in rendered.html
    assert "Hi Ana <b>&," in rendered.body


def test_the_unsubscribe_link_is_escaped_in_html() -> None:
    url = "https://aftercare.example/unsubscribe?p=1&s=abc"
    rendered = render("day1_checkin", "email", "en", context(unsubscribe_url=url))
    assert rendered.html is not None
    assert 'href="https://aftercare.example/unsubscribe?p=1&amp;s=abc"' in rendered.html
    assert url in rendered.body


def test_prp_patients_are_told_not_to_wash_and_rf_patients_about_swelling_and_grid_marks() -> None:
    prp = render("post_immediate", "email", "en", context(treatment="microneedling_prp")).body
    rf = render("post_immediate", "email", "en", context(treatment="rf_microneedling")).body
    plain_mn = render("post_immediate", "email", "en", context()).body
    assert "Do not wash" in prp and "Do not wash" not in rf + plain_mn
    assert "grid marks" in rf and "grid marks" not in prp + plain_mn


# ---- The day-3 warning ---------------------------------------------------------------------------------

DAY3_SIGNS = {
    "en": ["pus", "fever", "spreading redness", "blisters", "cold sore"],
    "es": ["pus", "fiebre", "rojez que se extiende", "ampollas", "herpes labial"],
}
DAY3_EMAIL_SIGNS = {
    "en": ["pus", "fever", "redness that is spreading", "blisters", "cold sore"],
    "es": ["pus", "fiebre", "enrojecimiento que se extiende", "ampollas", "herpes labial"],
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("treatment", TREATMENTS)
def test_the_day3_warning_names_the_signs_of_infection_and_cold_sores(language: str, treatment: str) -> None:
    sms = plain(render("day3_warning", "sms", language, context(language, treatment)).body)
    email = render("day3_warning", "email", language, context(language, treatment))
    for sign in DAY3_SIGNS[language]:
        assert sign in sms
    for sign in DAY3_EMAIL_SIGNS[language]:
        assert sign in email.body.lower()
        assert email.html is not None and sign in email.html.lower()


# ---- Pages to staff ------------------------------------------------------------------------------------


def page_context(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "clinic_name": LONG_CLINIC,
        "clinic_phone": PHONE,
        "emergency_number": "911",
        "include_stop_notice": False,
        "step": "page-7",
        "severity": "emergency",
        "ack_code": 4242,
        "initials": "GL",
        "patient_name": "Guadalupe Lopez",
        "alert_title": "",
        "step_number": 2,
        "reason": "nobody acknowledged it in time",
        "dashboard_url": "https://aftercare.example/dashboard/escalations/1234",
        "messages": [
            {"received": "2026-03-02 23:10 UTC", "text": "pus and fever 39.2", "findings": ["pus", "fever"]}
        ],
    }
    return values | overrides


def test_a_page_sms_carries_initials_severity_code_and_link_and_no_clinical_words() -> None:
    body = render("page", "sms", "en", page_context()).body
    assert sms_segments(body) == (GSM7, 1) or sms_segments(body)[1] <= 2
    for wanted in ("GL", "emergency", "ACK 4242", "https://aftercare.example/dashboard/escalations/1234"):
        assert wanted in body
    for clinical in ("pus", "fever", "Guadalupe", "Lopez"):
        assert clinical not in body


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_page_email_carries_the_details_and_no_patient_footer(language: str) -> None:
    rendered = render("page", "email", language, page_context())
    assert rendered.html is not None
    assert "Guadalupe Lopez" in rendered.body and "pus and fever 39.2" in rendered.body
    assert "ACK 4242" in rendered.body and "dashboard/escalations/1234" in rendered.html
    assert "unsubscribe" not in rendered.body.lower() + rendered.html.lower()
    assert FULL_FOOTER["en"][0] not in rendered.body
    # The staff layout's own lines, in both parts.
    assert "Acknowledge from the dashboard, or reply ACK 4242 by SMS." in rendered.body
    assert ">Open in the dashboard</a>" in rendered.html and rendered.html.startswith("<!DOCTYPE html>")


def test_the_emergency_answer_promises_an_alert_only_when_staff_are_paged() -> None:
    for language in LANGUAGES:
        paged = render("reply_emergency", "sms", language, context(language, staff_paged=True)).body
        nobody = render("reply_emergency", "sms", language, context(language, staff_paged=False)).body
        assert paged != nobody
        assert (
            ("alerted" in paged or "avisamos" in paged)
            and "alerted" not in nobody
            and "avisamos" not in nobody
        )


# Words a lock screen must not show: a question about pregnancy, or anything naming a risk (the
# sun-protection step goes only to patients at higher risk of dark patches; its text must not say so).
LOCK_SCREEN_WORDS = (
    "pregnan",
    "embaraz",
    "risk",
    "riesgo",
    "pih",
    "hyperpig",
    "hiperpig",
    "skin type",
    "fototipo",
)


@every_message
def test_no_sms_asks_about_pregnancy_or_names_a_risk(template: str, language: str, treatment: str) -> None:
    body = render(template, "sms", language, context(language, treatment)).body.lower()
    assert not [word for word in LOCK_SCREEN_WORDS if word in body], body
