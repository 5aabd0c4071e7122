"""settle window and crash count on the outbox

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 01:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('scheduled_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('crashes', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('settle_after', service.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scheduled_message', schema=None) as batch_op:
        batch_op.drop_column('settle_after')
        batch_op.drop_column('crashes')
