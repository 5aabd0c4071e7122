"""status, channel, kind, severity and keyword columns constrained to their enums

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 14:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, constraint name, allowed values) — the values of service.core.enums at this revision,
# written out so the migration does not change when the enums later grow.
COLUMNS = [
    ("booking", "status", "ck_booking_status", ["active", "cancelled"]),
    ("scheduled_message", "channel", "ck_scheduled_message_channel", ["sms", "email"]),
    ("scheduled_message", "status", "ck_scheduled_message_status", [
        "scheduled", "queued", "sending", "unknown", "sent", "delivered", "undelivered", "failed",
        "skipped", "cancelled", "suppressed",
    ]),
    ("scheduled_message", "kind", "ck_scheduled_message_kind", ["care", "reply"]),
    ("message", "channel", "ck_message_channel", ["sms", "email"]),
    ("message", "severity", "ck_message_severity", ["none", "routine", "urgent", "emergency"]),
    ("message", "keyword", "ck_message_keyword", ["stop", "start", "help"]),
]


def upgrade() -> None:
    for table, column, name, values in COLUMNS:
        allowed = ", ".join(f"'{v}'" for v in values)
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(max(len(v) for v in values)))
            batch.create_check_constraint(name, f"{column} IN ({allowed})")


def downgrade() -> None:
    for table, column, name, _ in reversed(COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="check")
            batch.alter_column(column, type_=sa.String())
