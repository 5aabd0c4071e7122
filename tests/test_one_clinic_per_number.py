"""One clinic per number: an SMS number and a sender address belong to one clinic (replies are routed by
them), and a message to a number or address no clinic has is kept for the operator, who is told once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text

from service import db
from service.channels import build_channels
from service.cli import main
from service.clinics import AddressTaken, add_staff, create_clinic, update_clinic
from service.migrate import SharedAddresses, alembic_config, upgrade
from service.models import Clinic, Message, UnroutedMessage
from service.monitoring import heartbeat
from service.monitoring.watchdog import look
from service.settings import get_settings, reset_settings
from tests.conftest import TEST_DATABASE_URL
from tests.test_inbound_sms import post_sms, sms_form, twilio_env  # noqa: F401  (a fixture)

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
# A clinic on +12125550100 written straight to the table, as an older version (or a race) could have.
INSERT = text(
    "INSERT INTO clinic (name, timezone, sms_from, email_from, country, emergency_number, quiet_start, "
    "quiet_end, ack_timeouts, inbox_reply_within_minutes, created_at) VALUES (:name, 'UTC', "
    "'+12125550100', :email, 'US', '911', '21:00', '08:00', '{}', 240, '2026-03-02 15:00:00')"
)


def test_a_second_clinic_on_a_number_or_address_already_used_is_refused_naming_the_first(session):
    create_clinic(session, name="Glow", timezone="America/New_York", sms_from="+12125550100",
                  email_from="care@glow.example", now=NOW)  # fmt: skip
    with pytest.raises(AddressTaken, match=r"\+12125550100 belongs to clinic 1 \(Glow\)"):
        create_clinic(session, name="Copy", timezone="America/New_York", sms_from="(212) 555-0100",
                      email_from="other@copy.example", now=NOW)  # fmt: skip
    with pytest.raises(AddressTaken, match=r"CARE@glow.example belongs to clinic 1 \(Glow\)"):
        create_clinic(session, name="Copy", timezone="America/New_York", sms_from="+12125550199",
                      email_from="CARE@glow.example", now=NOW)  # fmt: skip
    second, _ = create_clinic(session, name="Other", timezone="America/New_York", sms_from="+12125550199",
                              email_from="hello@other.example", now=NOW)  # fmt: skip
    with pytest.raises(AddressTaken, match="belongs to clinic 1"):
        update_clinic(session, second, now=NOW, sms_from="+12125550100")
    update_clinic(session, second, now=NOW, sms_from="+12125550198")  # its own: fine
    session.commit()
    assert session.scalars(select(Clinic.sms_from).order_by(Clinic.id)).all() == [
        "+12125550100",
        "+12125550198",
    ]


def test_the_cli_refuses_it_with_the_same_words(use_database, capsys):
    base = ["clinic", "create", "--name", "Glow", "--timezone", "America/New_York", "--email-from"]
    assert main([*base, "care@glow.example", "--sms-from", "+12125550100"]) == 0
    assert main([*base, "care@copy.example", "--sms-from", "+12125550100"]) != 0
    assert "belongs to clinic 1 (Glow)" in capsys.readouterr().err


def test_the_database_refuses_it_too_whatever_the_code_checked(session):
    """The constraint holds for a race the check cannot see (two clinics created at the same moment)."""
    from sqlalchemy.exc import IntegrityError

    create_clinic(session, name="Glow", timezone="America/New_York", sms_from="+12125550100",
                  email_from="care@glow.example", now=NOW)  # fmt: skip
    session.commit()
    with pytest.raises(IntegrityError):
        session.execute(INSERT, {"name": "Copy", "email": "x@copy.example"})
    session.rollback()


@contextmanager
def database_at_0008(tmp_path: Path) -> Iterator[str]:
    """A new database migrated to the revision before this one, DATABASE_URL naming it."""
    if TEST_DATABASE_URL:
        from tests.stack import new_postgres_database

        with new_postgres_database(TEST_DATABASE_URL, prefix="aftercare_0009") as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'old.db'}"


def test_the_migration_names_clinics_sharing_a_number_and_the_command_that_fixes_it(
    tmp_path, monkeypatch, capsys
):
    with database_at_0008(tmp_path) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        reset_settings()
        db.reset_engine()
        try:
            command.upgrade(alembic_config(), "0008")
            engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
            with engine.begin() as connection:
                for name in ("Glow", "Glow Downtown"):
                    connection.execute(INSERT, {"name": name, "email": "Care@glow.example"})
            engine.dispose()
            with pytest.raises(SharedAddresses) as refused:
                upgrade()
            message = str(refused.value)
            assert "+12125550100 is used by clinics 1 (Glow), 2 (Glow Downtown)" in message
            assert "care@glow.example is used by clinics 1 (Glow), 2 (Glow Downtown)" in message
            assert "aftercare clinic update --clinic ID --sms-from" in message
            # The command it names works before the migration can run, and then the migration does.
            fixed = ["clinic", "update", "--clinic", "2", "--sms-from", "+12125550177",
                     "--email-from", "downtown@glow.example"]  # fmt: skip
            assert main(fixed) == 0, capsys.readouterr().err
            upgrade()
            assert main(["clinic", "update", "--clinic", "2", "--sms-from", "+12125550100"]) != 0
        finally:
            db.reset_engine()


# -- messages to no clinic -----------------------------------------------------------------------------


@pytest.fixture
def watched(session: Any, make_clinic: Any, clock: Any, providers: Any, twilio_env: None, monkeypatch) -> Any:  # noqa: F811
    monkeypatch.setenv("ALERT_EMAIL", "operator@aftercare.example")
    reset_settings()
    clinic, _ = make_clinic()
    add_staff(session, clinic=clinic, name="Nia Nurse", phone="+12125550111", email="nia@glow.example",
              level=1, now=clock.now)  # fmt: skip
    session.commit()
    return clinic


def test_texts_to_a_number_no_clinic_has_are_kept_listed_and_the_operator_is_told_once(
    api, watched, session, clock, providers, capsys
):
    twilio, smtp = providers
    for number in range(3):
        form = sms_form(f"hello? my face is swollen ({number})", sid=f"SM{number:032d}", To="+12125550999")
        assert post_sms(api, form).status_code == 200
        assert post_sms(api, form).status_code == 200  # Twilio's retry stores nothing new
    assert session.scalars(select(Message)).all() == []  # no clinic's message
    kept = session.scalars(select(UnroutedMessage)).all()
    assert len(kept) == 3 and {m.recipient for m in kept} == {"+12125550999"}
    health = api.get("/healthz/delivery").json()
    assert any("+12125550999 (3)" in problem for problem in health["problems"])
    assert all("2125550147" not in problem for problem in health["problems"])  # never the sender
    # The watchdog looks twice: one alarm, one email, to the operator alone.
    heartbeat.beat(session, heartbeat.DISPATCHER, now=clock.now)
    session.commit()
    for _ in range(2):
        look(session, now=clock.now, settings=get_settings(), watching_since=clock.now,
             channels=build_channels(get_settings()))  # fmt: skip
    to = [m["To"] for m in smtp.messages]
    assert to == ["operator@aftercare.example"]
    assert twilio.messages == []  # no staff member paged or texted
    assert (
        main(["unrouted", "--days", "100000"]) == 0
    )  # the command reads the real clock; the test's is March
    printed = capsys.readouterr().out
    assert printed.count("to +12125550999") == 3 and "2125550147" not in printed and "swollen" not in printed


def test_an_email_to_an_address_no_clinic_has_is_kept_too(api, watched, session, clock, monkeypatch):
    from tests.test_inbound_email import SECRET, mailgun_form

    monkeypatch.setenv("INBOUND_EMAIL_SECRET", SECRET)
    reset_settings()
    form = mailgun_form("hello", clock=clock)
    form["recipient"] = "nobody@glow.example"
    answer = api.post("/webhooks/email/inbound", data=form).json()
    assert answer["stored"] is True and answer["routed"] is False
    assert session.scalars(select(UnroutedMessage.recipient)).all() == ["nobody@glow.example"]


def test_the_readme_paging_demo_works_straight_after_the_walk_through(use_database, capsys):
    """The clinic commands of both sections, in the README's order: the demo reuses the walk-through's
    clinic instead of creating a second one on its number (which is now refused)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    walk = readme.split("## A five-minute walk-through", 1)[1].split("## Paging staff", 1)[0]
    demo = readme.split("## Paging staff until someone answers", 1)[1].split("\n## ", 1)[0]
    commands = []
    for section, prefix in ((walk, ".venv/bin/aftercare "), (demo, "$A ")):
        joined = section.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(prefix) and (" clinic " in f" {line} " or " staff " in f" {line} "):
                commands.append(line.removeprefix(prefix).split("#")[0].split("|")[0])
    assert any(c.startswith("clinic create") for c in commands) and any(
        c.startswith("clinic update") for c in commands
    )
    for command_line in commands:
        argv = [part.strip('"') for part in _split(command_line)]
        argv = [a for a in argv if a != "--password-stdin"]
        assert main(argv) == 0, (command_line, capsys.readouterr().err)


def _split(line: str) -> list[str]:
    import shlex

    return shlex.split(line)
