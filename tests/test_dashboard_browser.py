"""The dashboard in a real browser: Debian's Chromium driven by Playwright. A staff member logs in, sees the
new urgent escalation, opens the patient's timeline, acknowledges; a second clinic's staff member gets a 404.

CI installs Chromium when it is missing (`.ci/run`); without it this test fails rather than skips, so a
broken dashboard never passes unseen. AFTERCARE_SCREENSHOTS=<dir> also saves the screenshots in docs/.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.api.app import create_app
from service.api.deps import get_now
from service.channels import build_channels
from service.clinics import add_staff
from service.core.enums import EscalationStatus
from service.models import Escalation
from service.settings import get_settings
from tests.conftest import book_through_api
from tests.stack import serving
from tests.test_dashboard import PASSWORD
from tests.test_inbound_sms import post_sms, sms_form
from tests.test_paging import tick

pytestmark = pytest.mark.timeout(180)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags a sandboxed, offline CI machine needs (no GPU, no background network, no first-run UI).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def browser() -> Any:
    assert Path(CHROMIUM).exists(), "Chromium is missing: apt-get install -y chromium (CI installs it)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def shoot(page: Any, name: str) -> None:
    folder = os.environ.get("AFTERCARE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_staff_log_in_see_the_escalation_open_the_timeline_and_acknowledge(
    browser, api, session, make_clinic, clock, providers
):
    clinic, key = make_clinic()
    add_staff(session, clinic=clinic, name="Nia Nurse", phone="+12125550111", email="nia@glow.example",
              level=1, now=clock.now, password=PASSWORD)  # fmt: skip
    other, _ = make_clinic(name="Other Clinic", sms_from="+12125550198", email_from="o@other.example")
    add_staff(session, clinic=other, name="Otto", phone="+12125550177", email="otto@other.example", level=1,
              now=clock.now, password=PASSWORD)  # fmt: skip
    session.commit()
    book_through_api(api, key, starts_at=clock.now - timedelta(days=3, hours=2))
    post_sms(api, sms_form("it's oozing yellow pus and I have a fever of 38.9", sid="SM" + "8" * 32))
    post_sms(api, sms_form("can I wear makeup tomorrow?", sid="SM" + "7" * 32))
    tick(session, clock, build_channels(get_settings()))  # the pages go out, as the worker would send them
    escalation = session.scalars(select(Escalation)).one()

    app = create_app()
    app.dependency_overrides[get_now] = lambda: clock.now + timedelta(minutes=4)
    with serving(app) as base:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.goto(f"{base}/dashboard")
        assert "/dashboard/login" in page.url
        page.fill("#email", "nia@glow.example")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector(f'[data-escalation="{escalation.id}"]')
        card = page.locator(f'[data-escalation="{escalation.id}"]')
        assert "urgent" in card.inner_text() and "Ana Lopez" in card.inner_text()
        assert "Nia Nurse (level 1), sms, sent" in card.inner_text()
        shoot(page, "dashboard-queue.png")

        page.click("text=Ana Lopez")
        page.wait_for_selector(".timeline")
        timeline = page.locator(".timeline").inner_text()
        assert "oozing yellow pus" in timeline and "Triage:" in timeline
        shoot(page, "dashboard-timeline.png")

        page.goto(f"{base}/dashboard")
        page.click(
            f'[data-escalation="{escalation.id}"] button:has-text("Acknowledge")'
        )  # htmx swaps the queue
        page.wait_for_selector("text=Acknowledged by Nia Nurse")
        session.expire_all()
        assert session.get(Escalation, escalation.id).status == EscalationStatus.ACKNOWLEDGED  # type: ignore[union-attr]

        other_page = browser.new_context().new_page()
        other_page.goto(f"{base}/dashboard/login")
        other_page.fill("#email", "otto@other.example")
        other_page.fill("#password", PASSWORD)
        other_page.click("button[type=submit]")
        other_page.wait_for_url(f"{base}/dashboard")
        response = other_page.goto(f"{base}/dashboard/escalations/{escalation.id}")
        assert response is not None and response.status == 404
        assert "Ana" not in other_page.content()
