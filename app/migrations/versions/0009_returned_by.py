"""returned_by/returned_at on chat_jobs and idle_jobs: a job's last delivery that ended without a
result

Revision ID: 0009
Revises: 0008

A miner whose lease on a job ran out, or who gave it back, cannot lease that job again for
RETURNED_JOB_COOLDOWN_S (app/leases/rules.py). Without it a hoarding wallet took the same job
back from the front of the queue on each delivery until MAX_ATTEMPTS failed it.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

TABLES = ("chat_jobs", "idle_jobs")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('returned_by', sa.Integer(), nullable=True))
        op.add_column(table, sa.Column('returned_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('returned_at')
            batch.drop_column('returned_by')
