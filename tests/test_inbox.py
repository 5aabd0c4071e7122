"""The transactional inbox: the webhook stores and answers at once; the inbound worker routes, triages,
escalates and answers, exactly once, whatever fails (docs/architecture.md#the-inbox)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from service import db
from service.clinics import add_staff
from service.core.enums import InboundState, InboxState, MessageKind
from service.models import AuditEvent, Clinic, Escalation, ScheduledMessage
from service.replies import pipeline
from service.triage.loader import load_lexicon
from tests.conftest import TEST_DATABASE_URL, book_through_api
from tests.inbound import answer_row, answer_text, process_received
from tests.stack import at_the_same_moment
from tests.test_dashboard import PASSWORD, log_in
from tests.test_inbound_sms import stored, text, twilio_env  # noqa: F401  (a fixture)


@pytest.fixture
def booked(api: Any, make_clinic: Any, clock: Any, twilio_env: None) -> dict[str, Any]:  # noqa: F811
    """A patient treated yesterday."""
    _, key = make_clinic()
    return book_through_api(api, key, starts_at=clock.now - timedelta(days=1, hours=2))


@pytest.fixture
def staff_login(session: Session, clock: Any) -> Any:
    """Log a level-1 nurse of the clinic into the dashboard."""

    def login(api: Any) -> Any:
        clinic = session.scalars(select(Clinic)).one()
        add_staff(
            session, clinic=clinic, name="Nia Nurse", phone="+12125550111", email="nia@glow.example", level=1,
            now=clock.now, password=PASSWORD,
        )  # fmt: skip
        session.commit()
        assert log_in(api, "nia@glow.example").status_code == 303
        return api

    return login


def count(session: Session, model: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def answers(session: Session) -> list[ScheduledMessage]:
    session.expire_all()
    return list(session.scalars(select(ScheduledMessage).where(ScheduledMessage.kind == MessageKind.REPLY)))


def test_the_webhook_only_stores_the_message_and_the_worker_does_the_rest(api, booked, session, clock):
    posted = text(api, "I have yellow pus and a fever", process=False)
    assert posted.status_code == 200 and posted.text == ""
    [message] = stored(session)
    # Stored as it came, nothing understood yet: no triage, no escalation, no answer.
    assert message.state == InboundState.RECEIVED and message.body == "I have yellow pus and a fever"
    assert message.severity == "none" and message.escalation_id is None
    assert count(session, Escalation) == 0 and answers(session) == []

    [outcome] = process_received(clock.now)
    assert outcome.state == "processed"
    [message] = stored(session)
    assert message.state == InboundState.PROCESSED and message.severity == "urgent"
    assert message.escalation_id is not None and message.patient_id == booked["patient_id"]
    assert "clinician will contact you" in (answer_text(session, message.id) or "")


def test_a_message_is_processed_once_however_often_its_task_runs(api, booked, session, clock):
    text(api, "there is pus and I have a fever", process=False)
    [message] = stored(session)
    outcomes = [
        pipeline.process(session, message.id, now=clock.now, lexicon=load_lexicon()) for _ in range(3)
    ]
    assert [o.state for o in outcomes] == ["processed", "already", "already"]
    assert count(session, Escalation) == 1 and len(answers(session)) == 1


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="a race needs PostgreSQL (SQLite serialises writers)")
def test_four_workers_on_one_message_at_the_same_moment_process_it_once(api, booked, session, clock):
    text(api, "there is pus coming out and I have a fever", process=False)
    [message] = stored(session)

    def work() -> str:
        with Session(db.get_engine(), expire_on_commit=False) as own:
            return pipeline.process(own, message.id, now=clock.now, lexicon=load_lexicon()).state

    outcomes = at_the_same_moment(4, work)
    assert sorted(outcomes) == ["already", "already", "already", "processed"]
    assert count(session, Escalation) == 1 and len(answers(session)) == 1
    opened = session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "escalation.opened")
    )
    assert opened == 1


def test_a_message_whose_triage_keeps_failing_is_shown_to_staff_as_could_not_be_processed(
    api, booked, session, clock, monkeypatch, staff_login
):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the vocabulary is broken")

    monkeypatch.setattr(pipeline, "triage", broken)
    text(api, "my lips are swelling", process=False)
    [message] = stored(session)
    states = []
    for _ in range(pipeline.MAX_ATTEMPTS):
        states.append(pipeline.process(session, message.id, now=clock.now, lexicon=load_lexicon()).state)
        clock.advance(seconds=30)
    assert states == ["retry"] * (pipeline.MAX_ATTEMPTS - 1) + ["failed"]
    [message] = stored(session)
    # Nothing half done by any try; kept with its text for a person.
    assert message.state == InboundState.FAILED and message.inbox_state == InboxState.NEEDS_REPLY
    assert message.attempts == pipeline.MAX_ATTEMPTS and message.failure == "processing failed (RuntimeError)"
    assert count(session, Escalation) == 0 and answers(session) == []
    page = staff_login(api).get("/dashboard/inbox")
    assert "could not be processed" in page.text and "my lips are swelling" in page.text


def test_a_worker_killed_mid_message_leaves_nothing_half_done_and_the_next_try_processes_it_once(
    api, booked, session, clock
):
    """The worker process dies inside the pipeline's transaction (after the escalation was written, before
    the commit): the try is counted, nothing else remains, and the next try does the whole job once."""
    text(api, "there is pus and I have a fever", process=False)
    [message] = stored(session)
    script = textwrap.dedent(
        f"""
        import os
        from datetime import datetime
        from sqlmodel import Session
        from service import db
        from service.replies import pipeline
        from service.triage.loader import load_lexicon

        opened = pipeline.open_for_message

        def open_then_die(*args, **kwargs):
            escalation = opened(*args, **kwargs)
            args[0].flush() if args else kwargs["session"].flush()
            os._exit(9)  # the power goes: no rollback, no goodbye to the database

        pipeline.open_for_message = open_then_die
        with Session(db.get_engine()) as session:
            pipeline.process(session, {message.id}, now=datetime.fromisoformat("{clock.now.isoformat()}"),
                             lexicon=load_lexicon())
        """
    )
    died = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), cwd=os.getcwd(), timeout=60)
    assert died.returncode == 9
    [message] = stored(session)
    assert message.state == InboundState.RECEIVED and message.attempts == 1
    assert count(session, Escalation) == 0 and answers(session) == []

    clock.advance(seconds=5)
    assert pipeline.process(session, message.id, now=clock.now, lexicon=load_lexicon()).state == "processed"
    [message] = stored(session)
    assert message.attempts == 2 and message.severity == "urgent"
    assert count(session, Escalation) == 1 and len(answers(session)) == 1


def test_a_message_whose_task_was_lost_is_swept_a_minute_later(api, booked, session, clock):
    """No broker at the webhook's commit: the message is stored all the same, and the dispatcher's sweep
    hands it to the inbound worker once it has waited a minute."""
    text(api, "is it normal that it is flaky?", process=False)
    [message] = stored(session)
    minute = timedelta(seconds=60)
    assert pipeline.stale(session, now=clock.now + timedelta(seconds=30), older_than=minute) == []
    assert pipeline.stale(session, now=clock.now + minute, older_than=minute) == [message.id]
    process_received(clock.now + minute)
    assert pipeline.stale(session, now=clock.now + timedelta(hours=1), older_than=minute) == []


def test_a_routine_question_after_an_urgent_report_gets_its_own_answer_and_reaches_the_inbox(
    api, booked, session, clock
):
    urgent = text(api, "I have yellow pus and a fever")
    clock.advance(minutes=1)
    question = text(api, "also when can I wear makeup again?")
    first, second = stored(session)
    assert first.severity == "urgent" and second.severity == "routine"
    assert second.escalation_id is None and second.inbox_state == InboxState.NEEDS_REPLY
    # Each its own text and its own answer: never the two joined into a message the patient did not send.
    assert second.triage_text == "also when can I wear makeup again?"
    assert "clinician will contact you" in urgent.text
    assert "Makeup is usually fine" in question.text and "clinician" not in question.text
    assert answer_row(session, first.id) is not None and answer_row(session, second.id) is not None


def test_a_finding_wholly_inside_an_earlier_message_never_raises_a_later_one(api, booked, session, clock):
    text(api, "my lips are swelling up")
    clock.advance(seconds=30)
    thanks = text(api, "thank you")
    first, second = stored(session)
    assert first.severity == "emergency"
    assert second.severity == "none" and thanks.text == ""
    assert {f["concept"] for f in second.findings} <= {"thanks"}


def test_a_finding_that_spans_two_texts_raises_the_later_one_only(api, booked, session, clock):
    text(api, "I have")
    clock.advance(seconds=40)
    text(api, "pus")
    first, second = stored(session)
    assert first.severity in ("none", "routine") and second.severity == "urgent"
    assert "pus" in {f["concept"] for f in second.findings}
    assert second.triage_text == "pus"


def test_texts_processed_out_of_order_are_read_in_the_order_they_were_sent(api, booked, session, clock):
    """Two workers may take a patient's texts in any order: the thread is the stored order, not the
    processing order."""
    text(api, "I have", process=False)
    clock.advance(seconds=40)
    text(api, "pus", process=False)
    first, second = stored(session)
    pipeline.process(session, second.id, now=clock.now, lexicon=load_lexicon())
    pipeline.process(session, first.id, now=clock.now, lexicon=load_lexicon())
    first, second = stored(session)
    assert second.severity == "urgent" and first.severity in ("none", "routine")
