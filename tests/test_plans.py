"""Care plans: the plan files, the loader, and the pure expansion of a plan into timed messages."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.enums import RiskFlag
from service.core.plans import CarePlan, PlanError, PlannedMessage, PlanStep, expand_plan, step_time
from service.rendering import MESSAGES_DIR
from service.scheduling.care_plans import (
    UnknownTreatment,
    available_treatments,
    check_plans,
    load_plan,
    load_plans,
)
from service.settings import PROJECT_ROOT

TREATMENTS = ["microneedling", "microneedling_prp", "rf_microneedling"]
DEFAULT_PLANS_DIR = PROJECT_ROOT / "templates" / "plans"
BOTH = ("sms", "email")
STARTS = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)  # 10:00 in New York


def expand(
    plan: CarePlan,
    *,
    now: datetime,
    starts_at: datetime = STARTS,
    duration: int | None = None,
    channels: tuple[str, ...] = BOTH,
    risk_flags: tuple[str, ...] = (),
) -> list[PlannedMessage]:
    return expand_plan(
        plan,
        starts_at=starts_at,
        duration_minutes=plan.default_duration_minutes if duration is None else duration,
        channels=channels,
        risk_flags=risk_flags,
        now=now,
    )


def by_step(messages: list[PlannedMessage], channel: str = "sms") -> dict[str, PlannedMessage]:
    return {m.step: m for m in messages if m.channel == channel}


# ---- The plan files ------------------------------------------------------------------------------------


def test_every_treatment_has_a_plan_file() -> None:
    assert available_treatments() == TREATMENTS


@pytest.mark.parametrize("treatment", TREATMENTS)
def test_each_plan_has_pre_care_and_the_six_aftercare_steps(treatment: str) -> None:
    plan = load_plan(treatment)
    ids = [s.id for s in plan.steps]
    for step in (
        "pre_48h",
        "pre_24h",
        "post_immediate",
        "day1_checkin",
        "day3_warning",
        "day6_followup",
        "day14_check",
        "week5_rebook",
    ):
        assert step in ids
    assert all(s.channels == BOTH for s in plan.steps)
    assert {s.anchor for s in plan.steps if s.id.startswith("pre_")} == {"start"}
    assert {s.anchor for s in plan.steps if not s.id.startswith("pre_")} == {"end"}
    assert plan.labels.keys() >= {"en", "es"}


def test_plans_know_how_long_each_treatment_takes() -> None:
    durations = {t: load_plan(t).default_duration_minutes for t in TREATMENTS}
    assert durations == {"microneedling": 60, "microneedling_prp": 75, "rf_microneedling": 60}


@pytest.mark.parametrize("treatment", TREATMENTS)
def test_only_the_post_treatment_step_is_sent_late(treatment: str) -> None:
    immediate = [s for s in load_plan(treatment).steps if s.immediate]
    assert [(s.id, s.catch_up_minutes) for s in immediate] == [("post_immediate", 24 * 60)]


@pytest.mark.parametrize("treatment", TREATMENTS)
def test_the_extra_sun_protection_step_is_only_for_patients_at_risk_of_dark_patches(treatment: str) -> None:
    conditional = {
        s.id: set(s.only_if_risk_flags) for s in load_plan(treatment).steps if s.only_if_risk_flags
    }
    assert conditional == {"day10_sun_protection": {"pih_risk", "fitzpatrick_iv_vi"}}


# ---- Expansion -----------------------------------------------------------------------------------------


def test_booking_made_weeks_ahead_gets_every_step_on_both_channels() -> None:
    plan = load_plan("microneedling")
    messages = expand(plan, now=STARTS - timedelta(days=21))
    unconditional = [s for s in plan.steps if not s.only_if_risk_flags]
    assert len(messages) == 2 * len(unconditional)
    assert not any(m.skipped for m in messages)


def test_pre_care_counts_from_the_start_and_aftercare_from_the_end_of_treatment() -> None:
    plan = load_plan("microneedling_prp")  # 75 minutes
    steps = by_step(expand(plan, now=STARTS - timedelta(days=7)))
    end = STARTS + timedelta(minutes=75)
    assert steps["pre_48h"].send_at == STARTS - timedelta(hours=48)
    assert steps["pre_24h"].send_at == STARTS - timedelta(hours=24)
    assert steps["post_immediate"].send_at == end + timedelta(minutes=90)
    assert steps["day1_checkin"].send_at == end + timedelta(hours=24)
    assert steps["day3_warning"].send_at == end + timedelta(hours=48)
    assert steps["week5_rebook"].send_at == end + timedelta(weeks=5)


def test_a_longer_session_moves_the_aftercare_but_not_the_pre_care() -> None:
    plan = load_plan("rf_microneedling")
    now = STARTS - timedelta(days=7)
    usual = by_step(expand(plan, now=now))
    longer = by_step(expand(plan, now=now, duration=plan.default_duration_minutes + 30))
    assert longer["pre_24h"].send_at == usual["pre_24h"].send_at
    assert longer["day1_checkin"].send_at == usual["day1_checkin"].send_at + timedelta(minutes=30)


def test_late_booking_still_gets_post_treatment_message() -> None:
    # The front desk enters the booking 90 minutes after the patient left.
    plan = load_plan("microneedling")
    now = STARTS + timedelta(minutes=plan.default_duration_minutes + 90)
    messages = expand(plan, now=now)
    steps = by_step(messages)

    assert steps["post_immediate"].send_at == now
    assert not steps["post_immediate"].skipped
    assert steps["pre_48h"].skipped and steps["pre_24h"].skipped
    still_to_send = {m.step for m in messages if not m.skipped}
    # The post-treatment message goes now; every later aftercare step (incl. the day-3 warning) follows.
    assert len(still_to_send) >= 6
    assert {"post_immediate", "day3_warning"} <= still_to_send
    assert all(m.send_at > now for m in messages if not m.skipped and m.step != "post_immediate")


def test_post_treatment_message_is_skipped_once_its_catch_up_window_has_passed() -> None:
    plan = load_plan("microneedling")
    end = STARTS + timedelta(minutes=plan.default_duration_minutes)
    steps = by_step(expand(plan, now=end + timedelta(minutes=90 + 24 * 60)))
    assert steps["post_immediate"].skipped
    assert steps["post_immediate"].send_at == end + timedelta(minutes=90)


def test_a_step_whose_time_has_passed_is_skipped_and_keeps_its_computed_time() -> None:
    plan = load_plan("microneedling")
    steps = by_step(expand(plan, now=STARTS - timedelta(hours=30)))
    assert steps["pre_48h"].skipped
    assert steps["pre_48h"].send_at == STARTS - timedelta(hours=48)
    assert not steps["pre_24h"].skipped


def test_a_step_due_exactly_now_counts_as_past() -> None:
    plan = load_plan("microneedling")
    steps = by_step(expand(plan, now=STARTS - timedelta(hours=24)))
    assert steps["pre_24h"].skipped


@pytest.mark.parametrize("flags", [("pih_risk",), ("fitzpatrick_iv_vi",), ("pih_risk", "eczema")])
def test_patients_at_risk_of_dark_patches_get_the_sun_protection_step(flags: tuple[str, ...]) -> None:
    plan = load_plan("microneedling")
    messages = expand(plan, now=STARTS - timedelta(days=3), risk_flags=flags)
    assert {m.channel for m in messages if m.step == "day10_sun_protection"} == set(BOTH)


@pytest.mark.parametrize("flags", [(), ("eczema",), ("anticoagulants", "keloid")])
def test_other_patients_do_not_get_the_sun_protection_step(flags: tuple[str, ...]) -> None:
    plan = load_plan("microneedling")
    messages = expand(plan, now=STARTS - timedelta(days=3), risk_flags=flags)
    assert "day10_sun_protection" not in {m.step for m in messages}


def test_only_the_patients_channels_are_planned() -> None:
    plan = load_plan("microneedling")
    messages = expand(plan, now=STARTS - timedelta(days=3), channels=("email",))
    assert {m.channel for m in messages} == {"email"}
    assert expand(plan, now=STARTS - timedelta(days=3), channels=()) == []


def test_send_times_are_utc_whatever_offset_the_booking_was_given_in() -> None:
    plan = load_plan("microneedling")
    new_york = STARTS.astimezone(timezone(timedelta(hours=-5)))
    in_utc = expand(plan, now=STARTS - timedelta(days=3))
    in_new_york = expand(
        plan, starts_at=new_york, now=(STARTS - timedelta(days=3)).astimezone(new_york.tzinfo)
    )
    assert in_new_york == in_utc
    assert all(m.send_at.tzinfo is UTC for m in in_new_york)


@pytest.mark.parametrize("naive", ["starts_at", "now"])
def test_naive_datetimes_are_refused(naive: str) -> None:
    plan = load_plan("microneedling")
    times = {"starts_at": STARTS, "now": STARTS - timedelta(days=3)}
    times[naive] = times[naive].replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        expand(plan, starts_at=times["starts_at"], now=times["now"])


def test_messages_are_sorted_by_time_then_step_then_channel() -> None:
    messages = expand(load_plan("rf_microneedling"), now=STARTS - timedelta(days=3), risk_flags=("pih_risk",))
    keys = [(m.send_at, m.step, m.channel) for m in messages]
    assert keys == sorted(keys)
    assert [m.channel for m in messages[:2]] == ["email", "sms"]


# ---- Snapshots -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("treatment", TREATMENTS)
def test_a_plan_snapshot_survives_a_trip_through_json(treatment: str) -> None:
    plan = load_plan(treatment)
    snapshot = json.loads(json.dumps(plan.to_snapshot()))
    assert CarePlan.from_snapshot(snapshot) == plan
    assert snapshot["labels"]["en"] == plan.label("en")


def test_a_snapshot_from_an_unknown_future_version_is_refused() -> None:
    snapshot = load_plan("microneedling").to_snapshot() | {"version": 99}
    with pytest.raises(ValueError, match="version"):
        CarePlan.from_snapshot(snapshot)


def test_a_treatment_label_falls_back_to_english() -> None:
    plan = load_plan("microneedling_prp")
    assert plan.label("es") == "microneedling con PRP"
    assert plan.label("fr") == "microneedling with PRP"


# ---- Validation: a step, a snapshot ---------------------------------------------------------------------

STEP: dict[str, object] = {
    "id": "day1",
    "anchor": "end",
    "offset_minutes": 1440,
    "channels": ["sms"],
    "template": "day1_checkin",
}


def step(**overrides: object) -> PlanStep:
    return PlanStep(**(STEP | overrides))  # type: ignore[arg-type]  # a dict of mixed values, on purpose


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"channels": ["sms", "fax"]}, "channels.1: Input should be 'sms' or 'email' (got 'fax')"),
        ({"channels": []}, "channels: Tuple should have at least 1 item"),
        ({"channels": ["sms", "sms"]}, "a channel is listed twice"),
        ({"anchor": "middle"}, "anchor: Input should be 'start' or 'end' (got 'middle')"),
        ({"catch_up_minutes": 60}, "catch_up_minutes only applies to an immediate step"),
        (
            {"immediate": True, "catch_up_minutes": -1},
            "catch_up_minutes: Input should be greater than or equal",
        ),
        # bool is an int in Python: `offset_minutes = true` is a typo, not one minute.
        ({"offset_minutes": True}, "offset_minutes: Input should be a valid integer (got True)"),
        ({"offset_minutes": 90.0}, "offset_minutes: Input should be a valid integer (got 90.0)"),
        ({"immediate": 1}, "immediate: Input should be a valid boolean (got 1)"),
        ({"template": ""}, "template: String should have at least 1 character"),
        ({"only_if_risk_flag": ["pih_risk"]}, "unknown key 'only_if_risk_flag'"),
        ({"template": None}, "template: Input should be a valid string (got None)"),
    ],
)
def test_a_malformed_step_is_refused_naming_the_step(overrides: dict[str, object], complaint: str) -> None:
    with pytest.raises(PlanError) as caught:
        PlanStep.from_dict(STEP | overrides)
    assert str(caught.value).startswith('step "day1": ')
    assert complaint in str(caught.value)


def test_a_step_without_an_id_is_named_by_its_position() -> None:
    raw = {key: value for key, value in STEP.items() if key != "id"}
    with pytest.raises(PlanError, match=r"^step #3: id: missing$"):
        PlanStep.from_dict(raw, index=2)


def test_a_step_built_in_code_is_checked_as_well() -> None:
    with pytest.raises(ValueError, match="anchor"):
        step(anchor="middle")
    with pytest.raises(ValueError, match="immediate"):
        step(catch_up_minutes=60)


def test_two_steps_with_one_id_are_refused() -> None:
    with pytest.raises(ValueError, match='step "day1": duplicate step id'):
        CarePlan("microneedling", 60, (step(), step()), {"en": "microneedling"})


# A booking's plan exactly as the code before the pydantic models froze it (the shape of SNAPSHOT_VERSION 1):
# bookings made then must still reschedule and send.
SNAPSHOT_BEFORE_PYDANTIC = {
    "version": 1,
    "treatment": "microneedling",
    "default_duration_minutes": 60,
    "labels": {"en": "microneedling", "es": "microneedling"},
    "steps": [
        {
            "id": "post_immediate",
            "anchor": "end",
            "offset_minutes": 90,
            "channels": ["sms", "email"],
            "template": "post_immediate",
            "immediate": True,
            "catch_up_minutes": 1440,
            "only_if_risk_flags": [],
        },
        {
            "id": "day10_sun_protection",
            "anchor": "end",
            "offset_minutes": 14400,
            "channels": ["sms", "email"],
            "template": "day10_sun_protection",
            "immediate": False,
            "catch_up_minutes": 0,
            "only_if_risk_flags": ["pih_risk", "fitzpatrick_iv_vi"],
        },
    ],
}


def test_a_snapshot_frozen_before_the_plan_models_still_loads() -> None:
    plan = CarePlan.from_snapshot(SNAPSHOT_BEFORE_PYDANTIC)
    assert [s.id for s in plan.steps] == ["post_immediate", "day10_sun_protection"]
    assert plan.to_snapshot() == SNAPSHOT_BEFORE_PYDANTIC
    shipped = {s.id: s for s in load_plan("microneedling").steps}
    assert all(s == shipped[s.id] for s in plan.steps)


def test_a_snapshot_step_naming_a_flag_outside_todays_vocabulary_still_loads() -> None:
    # A plan file is held to RiskFlag; a booking frozen under an older vocabulary is not refused for it
    # (its step simply applies to no patient without that flag).
    snapshot = json.loads(json.dumps(SNAPSHOT_BEFORE_PYDANTIC))
    snapshot["steps"][1]["only_if_risk_flags"] = ["hsv_history"]
    plan = CarePlan.from_snapshot(snapshot)
    assert plan.steps[1].only_if_risk_flags == ("hsv_history",)


def test_a_damaged_snapshot_is_refused_naming_the_step() -> None:
    snapshot = json.loads(json.dumps(SNAPSHOT_BEFORE_PYDANTIC))
    snapshot["steps"][1]["channels"] = ["fax"]
    with pytest.raises(PlanError, match=r"step \"day10_sun_protection\": channels\.0: .*'fax'"):
        CarePlan.from_snapshot(snapshot)


# ---- Validation: a plan file --------------------------------------------------------------------------


def test_an_unknown_treatment_raises_unknown_treatment() -> None:
    with pytest.raises(UnknownTreatment) as caught:
        load_plan("laser_peel")
    assert isinstance(caught.value, KeyError)
    assert "microneedling" in str(caught.value)


def test_a_treatment_name_cannot_reach_outside_the_plans_directory() -> None:
    with pytest.raises(UnknownTreatment):
        load_plan("../plans/microneedling")


GOOD_PLAN = """
treatment = "{name}"
label_en = "test"
default_duration_minutes = 60

[[steps]]
id = "post_immediate"
anchor = "end"
offset_minutes = 90
channels = ["sms", "email"]
template = "post_immediate"
"""


def write_plan(directory: Path, name: str, extra: str = "", **replace: str) -> Path:
    text = GOOD_PLAN.format(name=name)
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text + extra)
    return path


def refusal(plans_dir: Path, messages_dir: Path = MESSAGES_DIR) -> str:
    """The one line a process starting on this folder of plans would stop with."""
    with pytest.raises(PlanError) as caught:
        load_plans(plans_dir, messages_dir)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_plan_file_with_an_unknown_channel_is_refused_naming_file_and_step(tmp_path: Path) -> None:
    path = write_plan(tmp_path, "peel", **{'["sms", "email"]': '["sms", "pager"]'})
    assert refusal(tmp_path) == (
        f'care plan {path}, step "post_immediate": '
        "channels.1: Input should be 'sms' or 'email' (got 'pager')"
    )


def test_a_plan_file_with_a_duplicate_step_id_is_refused_naming_file_and_step(tmp_path: Path) -> None:
    duplicate = GOOD_PLAN[GOOD_PLAN.index("[[steps]]") :]
    path = write_plan(tmp_path, "peel", extra=duplicate)
    assert refusal(tmp_path) == f'care plan {path}: step "post_immediate": duplicate step id'


def test_a_step_naming_an_unknown_risk_flag_is_refused(tmp_path: Path) -> None:
    # A misspelt flag would match no patient: the step would silently never go.
    path = write_plan(tmp_path, "peel", extra='only_if_risk_flags = ["pih_risk", "fitzpatrick_4_6"]\n')
    line = refusal(tmp_path)
    assert line.startswith(f'care plan {path}, step "post_immediate": only_if_risk_flags.1: Input should be ')
    assert line.endswith("(got 'fitzpatrick_4_6')")
    assert "'fitzpatrick_iv_vi'" in line  # the allowed flags are named


def test_every_risk_flag_the_shipped_plans_name_is_in_the_vocabulary() -> None:
    # Read from the files themselves, not through the loader that should refuse them.
    for path in sorted(DEFAULT_PLANS_DIR.glob("*.toml")):
        for raw in tomllib.loads(path.read_text())["steps"]:
            for flag in raw.get("only_if_risk_flags", []):
                assert flag in {f.value for f in RiskFlag}, f"{path.name}: {flag}"


@pytest.mark.parametrize(
    ("replace", "complaint"),
    [
        ({"template =": "templat ="}, "template: missing; unknown key 'templat'"),
        ({"channels =": "only_if_risk_flag = []\nchannels ="}, "unknown key 'only_if_risk_flag'"),
        ({'treatment = "peel"': 'treatment = "facial"'}, "treatment = 'facial' does not match the file name"),
        ({"label_en": "label_es"}, "label_en is required"),
        ({'label_en = "test"': 'label_en = ""'}, "label_en: String should have at least 1 character"),
        ({"default_duration_minutes = 60": "default_duration_minutes = true"}, "default_duration_minutes: "),
        ({"default_duration_minutes = 60": "default_duration_minutes = 0"}, "greater than 0"),
        ({"default_duration_minutes = 60": "duration = 60"}, "unknown key 'duration'"),
        ({'label_en = "test"': 'label_en = "test"\nlabels = {en = "test"}'}, "unknown key 'labels'"),
        (
            {'template = "post_immediate"': 'template = "../es/post_immediate"'},
            "template: String should match",
        ),
    ],
)
def test_a_malformed_plan_file_is_refused(tmp_path: Path, replace: dict[str, str], complaint: str) -> None:
    path = write_plan(tmp_path, "peel", **replace)
    line = refusal(tmp_path)
    assert line.startswith(f"care plan {path}")
    assert complaint in line


def test_a_plan_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = write_plan(tmp_path, "peel", extra="[[steps]\n")
    assert refusal(tmp_path).startswith(f"care plan {path}: not valid TOML: ")


def test_a_plan_file_the_loader_would_not_read_is_refused(tmp_path: Path) -> None:
    write_plan(tmp_path, "peel")
    (tmp_path / "laser-peel.toml").write_text(GOOD_PLAN.format(name="laser-peel"))
    assert refusal(tmp_path) == (
        f"care plan {tmp_path / 'laser-peel.toml'}: the file name must be a treatment key "
        "(lower-case letters, digits, _)"
    )


def test_a_good_plan_file_in_another_directory_loads(tmp_path: Path) -> None:
    write_plan(tmp_path, "peel")
    assert available_treatments(tmp_path) == ["peel"]
    assert [s.id for s in load_plan("peel", tmp_path).steps] == ["post_immediate"]


# ---- Checked when they load: the templates ----------------------------------------------------------------


def test_every_shipped_plan_passes_the_start_up_check() -> None:
    assert sorted(check_plans()) == TREATMENTS


@pytest.fixture
def shipped(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the shipped plans and message templates, to break."""
    plans, messages = tmp_path / "plans", tmp_path / "messages"
    shutil.copytree(DEFAULT_PLANS_DIR, plans)
    shutil.copytree(MESSAGES_DIR, messages)
    # Not checked here: a folder is read once per process, so a check now would hide the damage to come.
    return plans, messages


def test_a_plan_naming_a_template_that_does_not_exist_is_refused_in_one_line(
    shipped: tuple[Path, Path],
) -> None:
    plans, messages = shipped
    path = plans / "microneedling.toml"
    path.write_text(path.read_text().replace('template = "day3_warning"', 'template = "day3_warnings"'))
    assert refusal(plans, messages) == (
        f'care plan {path}, step "day3_warning": no template messages/en/day3_warnings.sms.j2'
    )


@pytest.mark.parametrize(
    ("removed", "complaint"),
    [
        ("es/day3_warning.sms.j2", "no template messages/es/day3_warning.sms.j2"),
        ("es/day3_warning.subject.j2", "no template messages/es/day3_warning.subject.j2"),
        ("es/day3_warning.content.j2", "no template messages/es/day3_warning.content.j2"),
    ],
)
def test_every_file_rendering_needs_is_checked_in_english_and_spanish(
    shipped: tuple[Path, Path], removed: str, complaint: str
) -> None:
    plans, messages = shipped
    (messages / removed).unlink()
    assert refusal(plans, messages) == (
        f'care plan {plans / "microneedling.toml"}, step "day3_warning": {complaint}'
    )


@pytest.mark.parametrize("removed", ["es/_email.txt.j2", "en/_email.html.j2"])
def test_a_missing_email_layout_is_reported_with_the_first_message_put_into_it(
    shipped: tuple[Path, Path], removed: str
) -> None:
    # No message has a file of its own that names the layout: the renderer puts every patient email's copy
    # into it, so the check follows it from the copy.
    plans, messages = shipped
    (messages / removed).unlink()
    language = removed.split("/")[0]
    assert refusal(plans, messages) == (
        f'care plan {plans / "microneedling.toml"}, step "pre_48h": no template messages/{removed} '
        f"(used by messages/{language}/pre_48h.content.j2)"
    )


def test_a_layout_a_message_names_is_the_one_checked(shipped: tuple[Path, Path]) -> None:
    plans, messages = shipped
    content = messages / "es" / "day6_followup.content.j2"
    content.write_text('{% set layout = "_followup_email" %}\n' + content.read_text())
    assert refusal(plans, messages) == (
        f'care plan {plans / "microneedling.toml"}, step "day6_followup": no template '
        "messages/es/_followup_email.txt.j2 (used by messages/es/day6_followup.content.j2)"
    )


@pytest.mark.parametrize(
    "setting",
    [
        "{% set layout = other %}",
        "{% set layout %}_staff_email{% endset %}",
        '{% if first_name %}{% set layout = "_staff_email" %}{% endif %}',
        '{% set layout = "../en/_email" %}',
        '{% set layout = "_staff_email" %}{% set layout = "_email" %}',
    ],
)
def test_an_email_layout_that_depends_on_the_context_or_walks_out_is_refused(
    shipped: tuple[Path, Path], setting: str
) -> None:
    plans, messages = shipped
    content = messages / "es" / "day6_followup.content.j2"
    content.write_text(setting + "\n" + content.read_text())
    assert refusal(plans, messages).startswith(
        f'care plan {plans / "microneedling.toml"}, step "day6_followup": '
        "template messages/es/day6_followup.content.j2 does not compile: the email layout is set once, at "
        'the top level, to a constant partial name: {% set layout = "_staff_email" %} (line 1)'
    )


def test_a_patient_language_with_no_templates_at_all_is_refused(shipped: tuple[Path, Path]) -> None:
    # Spanish is required whether or not its folder ships: a booking may ask for it.
    plans, messages = shipped
    shutil.rmtree(messages / "es")
    assert refusal(plans, messages) == (
        f'care plan {plans / "microneedling.toml"}, step "pre_48h": no template messages/es/pre_48h.sms.j2'
    )


def test_a_missing_layout_is_reported_with_the_template_that_uses_it(shipped: tuple[Path, Path]) -> None:
    plans, messages = shipped
    (messages / "es" / "_sms_footer.j2").unlink()  # included by the warning steps' SMS
    assert refusal(plans, messages) == (
        f'care plan {plans / "microneedling.toml"}, step "post_immediate": '
        "no template messages/es/_sms_footer.j2 (used by messages/es/post_immediate.sms.j2)"
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{% block body %}{% if %}yes{% endif %}{% endblock %}", "Expected an expression"),
        ("{% block body %}{{ first_name | shout }}{% endblock %}", "No filter named 'shout'"),
    ],
)
def test_a_template_that_does_not_compile_is_refused(
    shipped: tuple[Path, Path], text: str, complaint: str
) -> None:
    plans, messages = shipped
    (messages / "es" / "day6_followup.sms.j2").write_text('{% extends "_sms.j2" %}\n' + text)
    line = refusal(plans, messages)
    assert line.startswith(
        f'care plan {plans / "microneedling.toml"}, step "day6_followup": '
        "template messages/es/day6_followup.sms.j2 does not compile: "
    )
    assert complaint in line and line.endswith("(line 2)")


def test_any_other_language_we_ship_is_checked_too(shipped: tuple[Path, Path]) -> None:
    plans, messages = shipped
    shutil.copytree(messages / "en", messages / "pt")
    (messages / "pt" / "week5_rebook.content.j2").unlink()
    assert refusal(plans, messages).endswith(
        'step "week5_rebook": no template messages/pt/week5_rebook.content.j2'
    )


def test_only_the_channels_a_step_names_need_templates(tmp_path: Path, shipped: tuple[Path, Path]) -> None:
    _, messages = shipped
    for part in ("subject", "content"):
        (messages / "es" / f"post_immediate.{part}.j2").unlink()
    write_plan(tmp_path / "sms_only", "peel", **{'["sms", "email"]': '["sms"]'})
    assert list(load_plans(tmp_path / "sms_only", messages)) == ["peel"]
    write_plan(tmp_path / "both", "peel")
    assert "no template messages/es/post_immediate.subject.j2" in refusal(tmp_path / "both", messages)


def test_every_treatment_the_api_accepts_needs_a_plan(shipped: tuple[Path, Path]) -> None:
    plans, messages = shipped
    (plans / "rf_microneedling.toml").unlink()
    with pytest.raises(PlanError) as caught:
        check_plans(plans, messages)
    assert str(caught.value) == (
        f"care plan {plans / 'rf_microneedling.toml'}: "
        "missing: bookings for rf_microneedling would be refused"
    )


def test_a_plans_folder_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="is not a folder"):
        check_plans(tmp_path / "nowhere")


def test_the_refusal_names_the_file_from_the_project_root_then_the_step_then_the_template(
    tmp_path: Path,
) -> None:
    # The shipped plans, with one Spanish SMS template gone: the line an operator reads in a deploy log.
    messages = tmp_path / "messages"
    shutil.copytree(MESSAGES_DIR, messages)
    (messages / "es" / "day3_warning.sms.j2").unlink()
    with pytest.raises(PlanError) as caught:
        check_plans(DEFAULT_PLANS_DIR, messages)
    assert str(caught.value) == (
        'care plan templates/plans/microneedling.toml, step "day3_warning": '
        "no template messages/es/day3_warning.sms.j2"
    )


def test_plans_are_read_once_per_process_so_an_edit_needs_a_restart(tmp_path: Path) -> None:
    path = write_plan(tmp_path, "peel")
    before = load_plan("peel", tmp_path)
    path.write_text(path.read_text().replace("offset_minutes = 90", "offset_minutes = 120"))
    assert load_plan("peel", tmp_path) is before
    assert before.steps[0].offset_minutes == 90


# ---- Properties ----------------------------------------------------------------------------------------

CHANNEL_SETS = st.sampled_from([("sms",), ("email",), ("sms", "email"), ("email", "sms")])
FLAGS = st.sampled_from(["pih_risk", "fitzpatrick_iv_vi", "eczema", "hsv_history"])


@st.composite
def plan_steps(draw: st.DrawFn, step_id: str) -> PlanStep:
    immediate = draw(st.booleans())
    return PlanStep(
        id=step_id,
        anchor=draw(st.sampled_from(["start", "end"])),
        offset_minutes=draw(st.integers(min_value=-7 * 24 * 60, max_value=60 * 24 * 60)),
        channels=draw(CHANNEL_SETS),
        template=f"t_{step_id}",
        immediate=immediate,
        catch_up_minutes=draw(st.integers(min_value=0, max_value=3 * 24 * 60)) if immediate else 0,
        only_if_risk_flags=tuple(draw(st.lists(FLAGS, max_size=2, unique=True))),
    )


@st.composite
def care_plans(draw: st.DrawFn) -> CarePlan:
    ids = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), min_size=1, max_size=8, unique=True)
    )
    return CarePlan(
        treatment="t",
        default_duration_minutes=draw(st.integers(min_value=1, max_value=240)),
        steps=tuple(draw(plan_steps(i)) for i in ids),
        labels={"en": "t"},
    )


aware_times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.timezones()
).filter(lambda d: d.utcoffset() is not None)


@st.composite
def bookings(draw: st.DrawFn) -> dict[str, object]:
    starts_at = draw(aware_times)
    return {
        "plan": draw(care_plans()),
        "starts_at": starts_at,
        "duration_minutes": draw(st.integers(min_value=0, max_value=300)),
        "channels": draw(st.sampled_from([(), ("sms",), ("email",), ("sms", "email")])),
        "risk_flags": frozenset(draw(st.lists(FLAGS, max_size=3))),
        # now anywhere from two weeks before the treatment to three months after it
        "now": starts_at + timedelta(minutes=draw(st.integers(min_value=-14 * 1440, max_value=90 * 1440))),
    }


@settings(max_examples=300, deadline=None)
@given(bookings())
def test_every_applicable_step_and_channel_appears_exactly_once(booking: dict[str, object]) -> None:
    plan = booking["plan"]
    assert isinstance(plan, CarePlan)
    messages = expand_plan(**booking)  # type: ignore[arg-type]
    wanted = Counter(
        (s.id, c)
        for s in plan.steps
        if s.applies_to(booking["risk_flags"])  # type: ignore[arg-type]
        for c in s.channels
        if c in booking["channels"]  # type: ignore[operator]
    )
    assert Counter((m.step, m.channel) for m in messages) == wanted
    templates = {s.id: s.template for s in plan.steps}
    assert all(m.template == templates[m.step] for m in messages)


@settings(max_examples=300, deadline=None)
@given(bookings())
def test_send_at_is_anchor_plus_offset_unless_an_immediate_step_catches_up(
    booking: dict[str, object],
) -> None:
    plan, now = booking["plan"], booking["now"]
    assert isinstance(plan, CarePlan) and isinstance(now, datetime)
    steps = {s.id: s for s in plan.steps}
    for m in expand_plan(**booking):  # type: ignore[arg-type]
        s = steps[m.step]
        due = step_time(s, starts_at=booking["starts_at"], duration_minutes=booking["duration_minutes"])  # type: ignore[arg-type]
        assert m.send_at.utcoffset() == timedelta(0)
        catching_up = s.immediate and due <= now < due + timedelta(minutes=s.catch_up_minutes)
        # Compared as instants: an aware time in a DST gap never compares equal across zones (PEP 495).
        if catching_up:
            assert (m.send_at.timestamp(), m.skipped) == (now.timestamp(), False)
        else:
            assert (m.send_at.timestamp(), m.skipped) == (due.timestamp(), due <= now)


@settings(max_examples=300, deadline=None)
@given(bookings())
def test_nothing_in_the_past_is_left_unskipped_except_the_immediate_step(booking: dict[str, object]) -> None:
    plan, now = booking["plan"], booking["now"]
    assert isinstance(plan, CarePlan) and isinstance(now, datetime)
    immediate = {s.id for s in plan.steps if s.immediate}
    messages = expand_plan(**booking)  # type: ignore[arg-type]
    for m in messages:
        if not m.skipped and m.send_at <= now:
            assert m.step in immediate and m.send_at.timestamp() == now.timestamp()
    keys = [(m.send_at, m.step, m.channel) for m in messages]
    assert keys == sorted(keys)


@settings(max_examples=200, deadline=None)
@given(care_plans())
def test_any_plan_survives_a_snapshot_round_trip(plan: CarePlan) -> None:
    assert CarePlan.from_snapshot(json.loads(json.dumps(plan.to_snapshot()))) == plan


def test_the_treatment_enum_lists_exactly_the_plans_that_ship():
    from service.core.enums import Treatment
    from service.scheduling.care_plans import available_treatments

    assert sorted(t.value for t in Treatment) == available_treatments()
