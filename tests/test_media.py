"""Patients' photos: fetched with the account's credentials through the real Twilio client's HTTP session,
kept in the database, deleted at Twilio once kept, capped in size, and purged after the retention period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.channels.twilio.sms import TwilioSMS
from service.models import Media, Message
from service.replies import media
from service.settings import get_settings
from tests.conftest import book_through_api
from tests.test_inbound_sms import post_sms, sms_form, twilio_env  # noqa: F401  (fixture)

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 2048 + b"\xff\xd9"


@pytest.fixture
def source(providers: Any) -> TwilioSMS:
    return TwilioSMS.from_settings(get_settings())


@pytest.fixture
def booked(api: Any, make_clinic: Any, clock: Any, providers: Any) -> None:
    _, key = make_clinic()
    book_through_api(api, key, starts_at=clock.now - timedelta(days=2))


def mms(api: Any, *urls: str, sid: str = "SM" + "6" * 32) -> Message:
    extra = {f"MediaUrl{n}": url for n, url in enumerate(urls)} | {
        f"MediaContentType{n}": "image/jpeg" for n in range(len(urls))
    }
    response = post_sms(api, sms_form("photo of my cheek", sid=sid, NumMedia=str(len(urls)), **extra))
    assert response.status_code == 200, response.text
    return response


def test_a_photo_is_kept_by_us_and_then_deleted_at_twilio(api, booked, session, clock, source, providers):
    twilio, _ = providers
    url = twilio.add_media(JPEG)
    mms(api, url)
    message = session.scalars(select(Message)).one()
    assert media.store(session, message.id, source=source, max_bytes=1_000_000, now=clock.now) == 1
    kept = session.scalars(select(Media)).one()
    assert kept.data == JPEG and kept.content_type == "image/jpeg" and kept.clinic_id == message.clinic_id
    assert not twilio.has_media(url)  # deleted at Twilio once ours was committed
    session.expire_all()
    assert session.get(Message, message.id).media[0]["deleted_at_provider"] is True  # type: ignore[union-attr]
    # Storing again changes nothing (a task delivered twice).
    assert media.store(session, message.id, source=source, max_bytes=1_000_000, now=clock.now) == 0


def test_a_photo_over_the_size_cap_is_left_and_said_so(api, booked, session, clock, source, providers):
    twilio, _ = providers
    url = twilio.add_media(JPEG)
    mms(api, url)
    message = session.scalars(select(Message)).one()
    assert media.store(session, message.id, source=source, max_bytes=1000, now=clock.now) == 0
    session.expire_all()
    assert "too large" in session.get(Message, message.id).media[0]["not_kept"]  # type: ignore[union-attr]
    assert twilio.has_media(url) and session.scalars(select(Media)).all() == []


def test_a_media_url_that_is_not_twilios_is_never_fetched(api, booked, session, clock, source, providers):
    mms(api, "https://attacker.example/steal?x=1")
    message = session.scalars(select(Message)).one()
    assert media.store(session, message.id, source=source, max_bytes=1_000_000, now=clock.now) == 0
    session.expire_all()
    assert "not a Twilio media URL" in session.get(Message, message.id).media[0]["not_kept"]  # type: ignore[union-attr]


def test_photos_past_the_retention_period_are_purged_but_remembered(
    api, booked, session, clock, source, providers
):
    twilio, _ = providers
    mms(api, twilio.add_media(JPEG))
    message = session.scalars(select(Message)).one()
    media.store(session, message.id, source=source, max_bytes=1_000_000, now=clock.now)
    assert media.purge_old(session, now=clock.now + timedelta(days=89), days=90) == 0
    assert media.purge_old(session, now=clock.now + timedelta(days=91), days=90) == 1
    session.commit()
    session.expire_all()
    kept = session.scalars(select(Media)).one()
    assert kept.data is None and kept.purged_at is not None and kept.size == len(JPEG)
