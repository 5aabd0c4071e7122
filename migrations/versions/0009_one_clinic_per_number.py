"""one clinic per SMS number and sender address; messages to no clinic kept for the operator

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 04:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models
from service.migrate import SharedAddresses


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _duplicates() -> list[str]:
    """Each number or address several clinics share, with the clinics (ids and names)."""
    connection = op.get_bind()
    found = []
    for label, expression in (("SMS number", "sms_from"), ("sender address", "lower(email_from)")):
        rows = connection.execute(sa.text(
            f"SELECT {expression} AS value, id, name FROM clinic WHERE {expression} IN "
            f"(SELECT {expression} FROM clinic GROUP BY {expression} HAVING count(*) > 1) ORDER BY value, id"
        )).all()
        shared: dict[str, list[str]] = {}
        for value, clinic_id, name in rows:
            shared.setdefault(value, []).append(f"{clinic_id} ({name})")
        found += [f"the {label} {value} is used by clinics {', '.join(ids)}" for value, ids in shared.items()]
    return found


def upgrade() -> None:
    duplicates = _duplicates()
    if duplicates:
        raise SharedAddresses(
            "each SMS number and sender address must belong to one clinic (replies are routed by them), "
            "but " + "; ".join(duplicates) + ". Give each clinic its own with `aftercare clinic update "
            "--clinic ID --sms-from E164 --email-from ADDRESS`, then run `aftercare migrate` again"
        )
    with op.batch_alter_table('clinic', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_clinic_sms_from', ['sms_from'])
    op.create_index('uq_clinic_email_from', 'clinic', [sa.text('lower(email_from)')], unique=True)
    op.create_table(
        'unrouted_message',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.Enum('sms', 'email', name='ck_unrouted_message_channel', native_enum=False,
                                     create_constraint=True, length=5), nullable=False),
        sa.Column('provider_id', sa.String(), nullable=False),
        sa.Column('sender', sa.String(), nullable=False),
        sa.Column('recipient', sa.String(), nullable=False),
        sa.Column('body', sa.String(), nullable=False),
        sa.Column('received_at', service.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('channel', 'recipient', 'provider_id', name='uq_unrouted_channel_recipient_provider'),
    )
    op.create_index('ix_unrouted_message_recipient', 'unrouted_message', ['recipient'])
    op.create_index('ix_unrouted_message_received_at', 'unrouted_message', ['received_at'])


def downgrade() -> None:
    op.drop_table('unrouted_message')
    op.drop_index('uq_clinic_email_from', table_name='clinic')
    with op.batch_alter_table('clinic', schema=None) as batch_op:
        batch_op.drop_constraint('uq_clinic_sms_from', type_='unique')
