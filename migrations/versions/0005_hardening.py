"""hardening

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 14:31:43.708758
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import service.models


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('webhook_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('token', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('seen_at', service.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'token', name='uq_webhook_token')
    )
    with op.batch_alter_table('webhook_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_token_seen_at'), ['seen_at'], unique=False)

    with op.batch_alter_table('clinic', schema=None) as batch_op:
        batch_op.alter_column('api_key_hash', existing_type=sa.VARCHAR(), nullable=True)

    # Messages to no clinic of ours are no longer kept (they cannot be keyed, and nobody can act on them).
    op.execute("DELETE FROM message WHERE clinic_id IS NULL")
    sqlite = op.get_bind().dialect.name == "sqlite"
    # SQLite keeps the old UNIQUE(provider_id) unnamed: the naming convention gives it a name to drop.
    convention = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
    with op.batch_alter_table('message', schema=None, naming_convention=convention) as batch_op:
        batch_op.drop_constraint('uq_message_provider_id' if sqlite else 'message_provider_id_key', type_='unique')
        batch_op.add_column(sa.Column('sender_verified', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.alter_column('clinic_id', existing_type=sa.INTEGER(), nullable=False)
        batch_op.create_unique_constraint(
            'uq_message_clinic_channel_provider', ['clinic_id', 'channel', 'provider_id']
        )


def downgrade() -> None:
    raise NotImplementedError("0005 drops messages to unknown clinics; restore a backup to go back")
