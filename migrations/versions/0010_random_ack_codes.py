"""random ACK codes per escalation, in place of a counter per clinic

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 05:00:00
"""
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As service.core.escalation (a migration keeps its own copy: later code may change).
ALPHABET = "ACDEFHJKMNPRTWXY34679"


def upgrade() -> None:
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.drop_constraint('uq_escalation_ack_code', type_='unique')
        batch_op.alter_column('ack_code', existing_type=sa.Integer(), type_=sa.String(length=8),
                              postgresql_using='ack_code::varchar')
    # Every existing escalation gets a random code: the old counters were guessable.
    connection = op.get_bind()
    taken: dict[int, set[str]] = {}
    for escalation_id, clinic_id in connection.execute(sa.text("SELECT id, clinic_id FROM escalation")).all():
        code = ""
        while not code or code in taken.setdefault(clinic_id, set()):
            code = "".join(secrets.choice(ALPHABET) for _ in range(4))
        taken[clinic_id].add(code)
        connection.execute(sa.text("UPDATE escalation SET ack_code = :code WHERE id = :id"),
                           {"code": code, "id": escalation_id})
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_escalation_ack_code', ['clinic_id', 'ack_code'])
    with op.batch_alter_table('clinic', schema=None) as batch_op:
        batch_op.drop_column('next_ack_code')


def downgrade() -> None:
    with op.batch_alter_table('clinic', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_ack_code', sa.Integer(), nullable=False, server_default='1'))
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.drop_constraint('uq_escalation_ack_code', type_='unique')
    op.execute("UPDATE escalation SET ack_code = CAST(id AS VARCHAR)")
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.alter_column('ack_code', existing_type=sa.String(length=8), type_=sa.Integer(),
                              postgresql_using='ack_code::integer')
        batch_op.create_unique_constraint('uq_escalation_ack_code', ['clinic_id', 'ack_code'])
