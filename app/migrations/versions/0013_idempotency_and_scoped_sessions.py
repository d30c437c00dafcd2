"""idempotency_keys; chat session ids scoped per business

Revision ID: 0013
Revises: 0011

- idempotency_keys: the Idempotency-Key of each request that created a job (POST /chat,
  /v1/chat/completions, /idle-job), written with the job, so a retry gets the same job.
- chat_sessions: a session id was global, so a business could claim another's chosen id first
  (the owner then got 403). It is now unique per business: a surrogate key and
  UNIQUE (session_id, business_id). The table is rebuilt (its primary key changes); rows keep
  their owner.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models

revision = '0013'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'idempotency_keys',
        sa.Column('business_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('job_id', sa.String(length=36), nullable=True),
        sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['business_id'], ['businesses.id']),
        sa.PrimaryKeyConstraint('business_id', 'key'))
    op.create_index('ix_idempotency_keys_job_id', 'idempotency_keys', ['job_id'])
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'])

    op.create_table(
        'chat_sessions_scoped',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('business_id', sa.Integer(), nullable=True),
        sa.Column('session_id', sa.String(length=128), nullable=False),
        sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['business_id'], ['businesses.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('session_id', 'business_id',
                            name='uq_chat_sessions_business_session'))
    op.execute("INSERT INTO chat_sessions_scoped (business_id, session_id, created_at) "
               "SELECT business_id, session_id, created_at FROM chat_sessions ORDER BY created_at")
    op.drop_table('chat_sessions')
    op.rename_table('chat_sessions_scoped', 'chat_sessions')


def downgrade() -> None:
    # Global ids again: where two businesses share one, the first claimant keeps it.
    op.create_table(
        'chat_sessions_global',
        sa.Column('session_id', sa.String(length=128), nullable=False),
        sa.Column('business_id', sa.Integer(), nullable=True),
        sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['business_id'], ['businesses.id']),
        sa.PrimaryKeyConstraint('session_id'))
    op.execute("INSERT INTO chat_sessions_global (session_id, business_id, created_at) "
               "SELECT s.session_id, s.business_id, s.created_at FROM chat_sessions s "
               "WHERE s.id = (SELECT min(f.id) FROM chat_sessions f "
               "WHERE f.session_id = s.session_id)")
    op.drop_table('chat_sessions')
    op.rename_table('chat_sessions_global', 'chat_sessions')
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_index('ix_idempotency_keys_job_id', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
