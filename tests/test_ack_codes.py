"""ACK that cannot be guessed: random codes per escalation, accepted only from staff paged for it (or at
least at the highest level paged so far), the same answer for a wrong code and someone else's, a limit on
wrong tries per phone, and every try audited with its phone (docs/architecture.md#paging)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlmodel import Session

from service.clinics import add_staff
from service.core.enums import EscalationStatus
from service.core.escalation import ACK_ALPHABET, ACK_LENGTH, read_ack_code
from service.models import AuditEvent, Escalation, StaffMember
from service.paging.staff_commands import MAX_WRONG, WRONG_WINDOW
from tests import test_paging
from tests.conftest import book_through_api
from tests.test_paging import DOCTOR, NURSE, escalation, text, tick

# The paging tests' scene: a clinic with a level-1 nurse and a level-2 doctor, a patient treated 3 days ago.
booked, channels, clinic_with_staff = test_paging.booked, test_paging.channels, test_paging.clinic_with_staff

E = EscalationStatus


def escalations(session: Session) -> list[Escalation]:
    session.expire_all()
    return list(session.scalars(select(Escalation).order_by(Escalation.id)))


def test_codes_are_random_short_and_read_forgivingly():
    assert read_ack_code("ACK 4K7P") == "4K7P" and read_ack_code("ack #4k7p.") == "4K7P"
    assert read_ack_code("Ack4k7p") == "4K7P" and read_ack_code("ACK") == ""
    assert read_ack_code("my face is red") is None and read_ack_code("ACK " + "!" * 100_000) is None


def test_ack_1_to_5_from_one_staff_phone_no_longer_silences_the_clinic(
    api, clinic_with_staff, session, clock, channels, providers
):
    """Before: codes counted 1, 2, 3 per clinic, so "ACK 1" … "ACK 5" acknowledged every open escalation."""
    clinic, key = clinic_with_staff
    for number in range(3):
        phone = f"(212) 555-02{number:02d}"
        book_through_api(api, key, starts_at=clock.now - timedelta(days=2), external_id=f"guess-{number}",
                         patient={"phone": phone})  # fmt: skip
        text(api, "there is pus and I have a fever", sender=f"+1212555020{number}")
    tick(session, clock, channels)
    opened = escalations(session)
    codes = [e.ack_code for e in opened]
    assert len(opened) == 3 and len(set(codes)) == 3
    assert all(len(c) == ACK_LENGTH and set(c) <= set(ACK_ALPHABET) for c in codes)
    for guess in range(1, 6):
        text(api, f"ACK {guess}", sender=NURSE)
    assert {e.status for e in escalations(session)} == {E.OPEN}


def test_only_staff_paged_for_it_or_at_least_at_the_highest_level_paged_may_ack(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    clinic, _ = clinic_with_staff
    text(api, "there is pus and I have a fever")
    tick(session, clock, channels)
    clock.advance(seconds=601)  # nobody answered: level 2 (the doctor) is paged
    tick(session, clock, channels)
    code = escalation(session).ack_code
    # A level-1 nurse who joined after the pages went: never paged, below the highest level paged (2).
    add_staff(session, clinic=clinic, name="New Nurse", phone="+12125550166", email="new@glow.example",
              level=1, now=clock.now)  # fmt: skip
    session.commit()
    refused = text(api, f"ACK {code}", sender="+12125550166").text
    assert escalation(session).status == E.OPEN and "not a code from a page of yours" in refused
    # The doctor was paged: accepted.
    assert "acknowledged" in text(api, f"ACK {code}", sender=DOCTOR).text
    assert escalation(session).status == E.ACKNOWLEDGED


def test_a_code_that_does_not_exist_and_one_that_is_not_yours_get_the_same_answer(
    api, booked, clinic_with_staff, session, clock, channels, providers
):
    clinic, _ = clinic_with_staff
    text(api, "there is pus and I have a fever")
    tick(session, clock, channels)
    clock.advance(seconds=601)
    tick(session, clock, channels)  # level 2 paged
    code = escalation(session).ack_code
    add_staff(session, clinic=clinic, name="New Nurse", phone="+12125550166", email="new@glow.example",
              level=1, now=clock.now)  # fmt: skip
    session.commit()
    unknown = "".join(c for c in ACK_ALPHABET if c not in code)[:ACK_LENGTH]
    not_hers = text(api, f"ACK {code}", sender="+12125550166").text
    no_such = text(api, f"ACK {unknown}", sender="+12125550166").text
    assert not_hers.replace(code, "CODE") == no_such.replace(unknown, "CODE")
    assert escalation(session).status == E.OPEN


def test_wrong_tries_are_limited_per_phone_then_allowed_again_and_each_is_audited(
    api, booked, session, clock, channels, providers
):
    text(api, "there is pus and I have a fever")
    tick(session, clock, channels)
    code = escalation(session).ack_code
    unknown = "".join(c for c in ACK_ALPHABET if c not in code)[:ACK_LENGTH]
    for _ in range(MAX_WRONG):
        text(api, f"ACK {unknown}", sender=NURSE)
    blocked = text(api, f"ACK {code}", sender=NURSE).text  # the right code, after too many wrong ones
    assert "too many wrong codes" in blocked and escalation(session).status == E.OPEN
    clock.advance(seconds=WRONG_WINDOW.total_seconds() + 60)
    assert "acknowledged" in text(api, f"ACK {code}", sender=NURSE).text
    refused = session.scalars(select(AuditEvent).where(AuditEvent.action == "escalation.ack_refused")).all()
    assert len(refused) == MAX_WRONG + 1 and {e.detail["phone"] for e in refused} == {NURSE}
    [taken] = session.scalars(select(AuditEvent).where(AuditEvent.action == "escalation.ack_by_sms")).all()
    assert taken.detail["phone"] == NURSE


def test_an_inactive_staff_members_ack_counts_for_nothing(api, booked, session, clock, channels, providers):
    text(api, "there is pus and I have a fever")
    tick(session, clock, channels)
    code = escalation(session).ack_code
    nurse = session.scalars(select(StaffMember).where(StaffMember.phone == NURSE)).one()
    nurse.active = False
    session.commit()
    text(api, f"ACK {code}", sender=NURSE)
    assert escalation(session).status == E.OPEN
