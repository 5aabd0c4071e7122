"""the transactional inbox: an inbound message's processing state, its raw form and its proof of sender

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 04:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        # Every message stored before this revision was processed in its webhook.
        batch_op.add_column(sa.Column(
            'state', sa.Enum('received', 'processed', 'failed', name='ck_message_state', native_enum=False,
                             create_constraint=True, length=9),
            nullable=False, server_default='processed',
        ))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_attempt_at', service.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('processed_at', service.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('failure', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('raw', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('headers', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('automatic', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('sender_check', sa.String(), nullable=True))
        batch_op.create_index('ix_message_state', ['state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_state')
        for column in ('sender_check', 'automatic', 'headers', 'raw', 'failure', 'processed_at',
                       'last_attempt_at', 'attempts', 'state'):
            batch_op.drop_column(column)
