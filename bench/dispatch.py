"""How fast bookings are expanded, due rows claimed and sends recorded — SQLite and PostgreSQL side by side.

    .venv/bin/python bench/dispatch.py [--bookings 300] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Measures the use cases in one process with a channel that accepts instantly, so the numbers are our own
overhead per message (the database round trips of claim → sending → sent), not a provider's. Prints one
table; record it in docs/benchmarks.md. Not a test: no assertion on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 40)

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import Session  # noqa: E402

from service import db  # noqa: E402
from service.api.schemas import BookingIn  # noqa: E402
from service.channels.base import OutgoingMessage, ProviderReceipt  # noqa: E402
from service.clinics import create_clinic  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.outbox.dispatch import dispatch  # noqa: E402
from service.scheduling.bookings import create_booking  # noqa: E402
from service.sending.send import send_due_message  # noqa: E402
from service.settings import get_settings, reset_settings  # noqa: E402


class InstantChannel:
    """Accepts every message at once: what is left is our own cost per message."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0

    def send(self, message: OutgoingMessage) -> ProviderReceipt:
        self.sent += 1
        return ProviderReceipt(f"bench-{message.outbox_id}", "queued")

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> ProviderReceipt | None:
        return None


def use(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    reset_settings()
    db.reset_engine()
    upgrade()


def measure(label: str, url: str, bookings: int) -> dict[str, float | str]:
    use(url)
    # Treatment ended 90 minutes ago for every booking; then the clock jumps 40 days so every step is due.
    now = datetime.now(UTC).replace(microsecond=0)
    starts = now - timedelta(minutes=150)
    with Session(db.get_engine(), expire_on_commit=False) as session:
        clinic, _ = create_clinic(
            session,
            name="Bench",
            timezone="UTC",
            sms_from="+12125550100",
            email_from="b@example.com",
            now=now,
            quiet_hours="00:00-00:00",
        )
        session.commit()
        started = time.perf_counter()
        for number in range(bookings):
            body = {
                "external_id": f"bench-{number}", "treatment": "microneedling",
                "starts_at": starts.isoformat(),
                "patient": {"first_name": "Pat", "last_name": f"N{number}", "phone": f"+1212555{number:04d}",
                            "email": f"p{number}@example.com", "timezone": "UTC"},
            }  # fmt: skip
            create_booking(
                session,
                clinic,
                BookingIn.model_validate(body).to_command(phone=body["patient"]["phone"]),
                now=now,
            )
            session.commit()
        booking_seconds = time.perf_counter() - started

        later = now + timedelta(days=40)
        settings = get_settings()
        channels = {"sms": InstantChannel("sms"), "email": InstantChannel("email")}
        claimed: list[int] = []
        started = time.perf_counter()
        while True:
            run = dispatch(session, now=later, settings=settings)
            session.commit()
            if not run.due:
                break
            claimed.extend(run.due)
        claim_seconds = time.perf_counter() - started

        started = time.perf_counter()
        for message_id in claimed:
            send_due_message(session, message_id, now=later, channels=channels, settings=settings)
        send_seconds = time.perf_counter() - started
    sent = channels["sms"].sent + channels["email"].sent
    return {
        "database": label,
        "bookings/s": bookings / booking_seconds,
        "claims/s": len(claimed) / claim_seconds,
        "sends/s (one worker thread)": sent / send_seconds,
        "messages": float(sent),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bookings", type=int, default=300)
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL", ""))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure("SQLite (WAL)", f"sqlite:///{Path(tmp) / 'bench.db'}", args.bookings))
    if args.postgres:
        admin_url = make_url(args.postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        name = f"aftercare_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            results.append(measure("PostgreSQL", url, args.bookings))
        finally:
            db.reset_engine()
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    columns = list(results[0])
    print(" | ".join(columns))
    for row in results:
        print(" | ".join(f"{row[c]:.0f}" if isinstance(row[c], float) else str(row[c]) for c in columns))


if __name__ == "__main__":
    main()
