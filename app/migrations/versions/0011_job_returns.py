"""job_returns: every delivery of a leased job that ended without a result, not only the last

Revision ID: 0011
Revises: 0010

0009 remembered only a job's last returner (returned_by/returned_at), so two wallets taking turns
releasing every job failed 17 of 20 chats. Each return is a row now: each returner waits
RETURNED_JOB_COOLDOWN_S before it may lease the job again and none of them gets its last
delivery (app/leases/rules.py). The releasing miner's reason is kept here, for operators, and no
longer becomes the business-visible failure_reason.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_returns',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_table', sa.String(length=32), nullable=False),
        sa.Column('job_id', sa.String(length=36), nullable=False),
        sa.Column('miner_id', sa.Integer(), nullable=False),
        sa.Column('returned_at', sa.DateTime(), nullable=False),
        sa.Column('how', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_job_returns_job_miner', 'job_returns', ['job_table', 'job_id', 'miner_id'])


def downgrade() -> None:
    op.drop_index('ix_job_returns_job_miner', table_name='job_returns')
    op.drop_table('job_returns')
