"""Purposes: what a row is for decides where it goes, whether it may go and what follows its failure — and
nothing else does. The send path and the outbox never look at a row's kind; a failure learnt at send time
and one learnt from a delivery report take the same path (docs/architecture.md#purposes)."""

from __future__ import annotations

import ast
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from service.channels import build_channels
from service.core.enums import Channel, MessageKind, MessageStatus
from service.models import AuditEvent, Patient, StaffMember
from service.outbox import lifecycle
from service.outbox.dispatch import dispatch
from service.outbox.lifecycle import NewRow
from service.sending.send import Outcome, send_due_message
from service.settings import PROJECT_ROOT, get_settings
from service.wiring import purposes
from tests import test_status_webhook
from tests.test_sending import book, rows
from tests.test_status_webhook import callback

S = MessageStatus
PATIENT_PHONE = "+12125550147"
webhook_server = test_status_webhook.webhook_server  # the fixture, shared
KIND_BLIND = (PROJECT_ROOT / "service" / "sending", PROJECT_ROOT / "service" / "outbox")


def test_every_kind_of_row_has_a_purpose_of_that_kind():
    every = purposes()
    assert set(every) == set(MessageKind)
    assert all(purpose.kind == kind for kind, purpose in every.items())


def _kind_branches(source: str, name: str) -> list[str]:
    """Places that name a kind (``MessageKind.PAGE``) or compare a row's ``.kind``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if named and node.value.id == "MessageKind" and node.attr.isupper():  # type: ignore[attr-defined]
            found.append(f"{name}:{node.lineno} MessageKind.{node.attr}")
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Attribute) and o.attr == "kind" for o in operands):
                found.append(f"{name}:{node.lineno} compares .kind")
    return found


def test_the_send_path_and_the_outbox_never_branch_on_a_rows_kind():
    found = [
        hit
        for root in KIND_BLIND
        for path in sorted(root.rglob("*.py"))
        for hit in _kind_branches(path.read_text(), path.name)
    ]
    assert found == [], "ask the row's purpose instead: " + "; ".join(found)


@pytest.mark.parametrize(
    "planted",
    [
        "if row.kind == MessageKind.PAGE:\n    pass\n",
        "wanted = row.kind in (MessageKind.CARE, MessageKind.REPLY)\n",
        "if row.kind != 'care':\n    pass\n",
    ],
)
def test_the_kind_check_finds_a_planted_branch(planted: str):
    source = (KIND_BLIND[0] / "send.py").read_text() + "\n" + planted
    assert _kind_branches(source, "send.py")


TEMPLATES: dict[MessageKind, tuple[str, dict[str, Any]]] = {
    MessageKind.REPLY: ("reply_acknowledged", {}),
    MessageKind.STAFF_REPLY: ("staff_reply", {"text": "Please call us this afternoon."}),
}


def _sms_row(session: Session, clinic: Any, clock: Any, kind: MessageKind) -> int:
    """An SMS of ``kind`` to a patient who chose SMS only (so email is where a failure falls back to)."""
    if kind == MessageKind.CARE:
        book(session, clinic, clock, starts_at=(clock.now - timedelta(minutes=150)).isoformat(),
             patient={"channels": ["sms"]})  # fmt: skip
        dispatch(session, now=clock.now, settings=get_settings())
        session.commit()
        [row] = rows(session, step="post_immediate", channel="sms")
        assert row.id is not None
        return row.id
    booking = book(session, clinic, clock, starts_at=(clock.now + timedelta(days=3)).isoformat(),
                   patient={"channels": ["sms"]})  # fmt: skip
    template, context = TEMPLATES[kind]
    new = NewRow(
        kind=kind, clinic_id=clinic.id, booking_id=booking.id, patient_id=booking.patient_id,
        step=f"answer-{kind}", channel=Channel.SMS, template=template, context=context, send_at=clock.now,
    )  # fmt: skip
    row = lifecycle.queue_now(session, new, now=clock.now)
    session.commit()
    assert row is not None and row.id is not None
    return row.id


def _send(session: Session, message_id: int, clock: Any) -> Outcome:
    return send_due_message(
        session,
        message_id,
        now=clock.now,
        channels=build_channels(get_settings()),
        purposes=purposes(),
        settings=get_settings(),
    )


@pytest.mark.parametrize("learnt", ["when sending", "from the delivery report"])
@pytest.mark.parametrize("kind", [MessageKind.CARE, MessageKind.REPLY, MessageKind.STAFF_REPLY])
def test_a_message_to_a_patient_that_cannot_reach_them_falls_back_to_email_wherever_that_is_learnt(
    kind, learnt, session, make_clinic, clock, providers, webhook_server
):
    twilio, smtp = providers
    clinic, _ = make_clinic()
    message_id = _sms_row(session, clinic, clock, kind)
    if learnt == "when sending":
        twilio.error_for_number(PATIENT_PHONE, status=400, code=21614)  # not a mobile number
        assert _send(session, message_id, clock) == Outcome.FAILED
        actor, failed_as = "worker", S.FAILED
    else:
        assert _send(session, message_id, clock) == Outcome.SENT
        response = callback(
            twilio, twilio.messages[-1]["sid"], "undelivered", webhook_server, error_code=30006
        )
        assert response.status_code == 200
        actor, failed_as = "provider", S.UNDELIVERED

    [failed] = rows(session, id=message_id)
    assert failed.status == failed_as
    [fallback] = rows(session, fallback_for_id=message_id)
    assert (fallback.channel, fallback.kind, fallback.step) == (Channel.EMAIL, kind, failed.step)
    assert fallback.status == S.SCHEDULED
    patient = session.get(Patient, failed.patient_id, populate_existing=True)
    assert patient is not None and patient.sms_unreachable_reason
    [audited] = session.scalars(
        select(AuditEvent).where(
            AuditEvent.subject == f"message:{message_id}", AuditEvent.action == "message.failed"
        )
    ).all()
    assert audited.actor == actor and audited.detail["channel"] == "sms"


def test_a_staff_answer_to_a_stranger_has_no_other_channel_to_fall_back_to(
    session, make_clinic, clock, providers
):
    twilio, _ = providers
    clinic, _ = make_clinic()
    stranger = "+12125550199"
    new = NewRow(
        kind=MessageKind.STAFF_REPLY, clinic_id=clinic.id, to_address=stranger, step="staff-reply-stranger",
        channel=Channel.SMS, template="staff_reply", context={"text": "Who is this?"}, send_at=clock.now,
    )  # fmt: skip
    row = lifecycle.queue_now(session, new, now=clock.now)
    session.commit()
    assert row is not None and row.id is not None
    twilio.error_for_number(stranger, status=400, code=21614)
    assert _send(session, row.id, clock) == Outcome.FAILED
    assert rows(session, fallback_for_id=row.id) == []


def test_a_page_may_not_start_sending_to_a_staff_member_deactivated_a_moment_before(
    session, make_clinic, clock, providers
):
    """The page's condition is in the UPDATE that starts the send, like a care message's opt-out."""
    clinic, _ = make_clinic()
    nurse = StaffMember(
        clinic_id=clinic.id,
        name="Nurse",
        phone="+12125550111",
        email="nurse@glow.example",
        created_at=clock.now,
    )
    session.add(nurse)
    session.commit()
    new = NewRow(
        kind=MessageKind.PAGE, clinic_id=clinic.id, staff_member_id=nurse.id, step="page-x",
        channel=Channel.SMS, template="page", send_at=clock.now,
    )  # fmt: skip
    page = lifecycle.queue_now(session, new, now=clock.now)
    session.commit()
    assert page is not None and page.id is not None
    nurse.active = False
    session.add(nurse)
    session.commit()
    page_purpose = purposes()[MessageKind.PAGE]
    started = lifecycle.start_sending(
        session, page.id, now=clock.now, attempts=1, body="", purpose=page_purpose
    )
    assert not started
    nurse.active = True
    session.add(nurse)
    session.commit()
    assert lifecycle.start_sending(session, page.id, now=clock.now, attempts=1, body="", purpose=page_purpose)
