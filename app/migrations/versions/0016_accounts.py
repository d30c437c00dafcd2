"""business accounts: the ledger, balances, deposits, erasures

Revision ID: 0016
Revises: 0015

- ledger_entries: every change of a business's balance (top-up, hold, charge, release, refund,
  adjustment), append-only; businesses.balance_usd is their sum, kept in step by the ledger.
- businesses: balance, low-balance threshold, retention override, deposit reference (existing
  businesses get one here), removal time. api_keys: a monthly spend limit.
- chat_jobs / idle_jobs: what the submission held (NULL: not priced), when content was erased;
  chat_jobs also records the submitting key (usage by key).
- revenue_events.ledger_entry_id: revenue is a charge (NULL for revenue booked before 0016 and
  for carry-overs).
- deposits, chain_cursors: stablecoin transfers into the treasury and how far they were scanned.
- erasures: who erased what customer content, when (never the content).
"""
from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

import app.models

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'ledger_entries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('business_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('amount_usd', app.models.USDAmount(), nullable=False),
        sa.Column('job_kind', sa.String(length=8), nullable=True),
        sa.Column('job_id', sa.String(length=36), nullable=True),
        sa.Column('api_key_id', sa.Integer(), nullable=True),
        sa.Column('model', sa.String(length=128), nullable=True),
        sa.Column('tokens', sa.Integer(), nullable=True),
        sa.Column('price_per_1k_usd', app.models.USDAmount(), nullable=True),
        sa.Column('reference', sa.String(length=255), nullable=True),
        sa.Column('actor', sa.String(length=64), nullable=True),
        sa.Column('note', sa.String(length=500), nullable=True),
        sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['business_id'], ['businesses.id']),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_ledger_entries_business_id', 'ledger_entries', ['business_id', 'id'])
    op.create_index('ix_ledger_entries_key_created', 'ledger_entries',
                    ['api_key_id', 'created_at'])
    op.create_index('uq_ledger_entries_job', 'ledger_entries', ['job_kind', 'job_id', 'kind'],
                    unique=True, postgresql_where=sa.text('job_id IS NOT NULL'),
                    sqlite_where=sa.text('job_id IS NOT NULL'))
    op.create_index('uq_ledger_entries_reference', 'ledger_entries',
                    ['business_id', 'kind', 'reference'], unique=True,
                    postgresql_where=sa.text('reference IS NOT NULL'),
                    sqlite_where=sa.text('reference IS NOT NULL'))

    op.create_table(
        'deposits',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('business_id', sa.Integer(), nullable=True),
        sa.Column('tx_hash', sa.String(length=66), nullable=False),
        sa.Column('log_index', sa.Integer(), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=False),
        sa.Column('block_hash', sa.String(length=66), nullable=False),
        sa.Column('from_address', sa.String(length=42), nullable=False),
        sa.Column('token_address', sa.String(length=42), nullable=False),
        sa.Column('amount', app.models.TokenAmount(length=80), nullable=False),
        sa.Column('amount_usd', app.models.USDAmount(), nullable=False),
        sa.Column('reference', sa.String(length=32), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('ledger_entry_id', sa.Integer(), nullable=True),
        sa.Column('reversal_entry_id', sa.Integer(), nullable=True),
        sa.Column('seen_at', app.models.UTCDateTime(), nullable=False),
        sa.Column('credited_at', app.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['business_id'], ['businesses.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('tx_hash', 'log_index', name='uq_deposits_tx_log'))
    op.create_index('ix_deposits_business_id', 'deposits', ['business_id'])
    op.create_index('ix_deposits_status', 'deposits', ['status'])

    op.create_table(
        'chain_cursors',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', app.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'))

    op.create_table(
        'erasures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('business_id', sa.Integer(), nullable=True),
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('subject_hash', sa.String(length=64), nullable=True),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('jobs', sa.Integer(), nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False),
        sa.Column('cancelled', sa.Integer(), nullable=False),
        sa.Column('before', app.models.UTCDateTime(), nullable=True),
        sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['business_id'], ['businesses.id']),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_erasures_business_id', 'erasures', ['business_id'])

    op.add_column('businesses', sa.Column('balance_usd', app.models.USDAmount(),
                                          server_default='0', nullable=False))
    op.add_column('businesses', sa.Column('low_balance_usd', app.models.USDAmount(), nullable=True))
    op.add_column('businesses', sa.Column('retention_days', sa.Integer(), nullable=True))
    op.add_column('businesses', sa.Column('deposit_ref', sa.String(length=32), nullable=True))
    op.add_column('businesses', sa.Column('removed_at', app.models.UTCDateTime(), nullable=True))
    op.create_index('uq_businesses_deposit_ref', 'businesses', ['deposit_ref'], unique=True)
    conn = op.get_bind()
    for (business_id,) in conn.execute(sa.text("SELECT id FROM businesses")).all():
        conn.execute(sa.text("UPDATE businesses SET deposit_ref = :ref WHERE id = :id"),
                     dict(ref=secrets.token_hex(8), id=business_id))

    op.add_column('api_keys', sa.Column('monthly_limit_usd', app.models.USDAmount(), nullable=True))
    op.add_column('chat_jobs', sa.Column('api_key_id', sa.Integer(), nullable=True))
    op.add_column('chat_jobs', sa.Column('hold_usd', app.models.USDAmount(), nullable=True))
    op.add_column('chat_jobs', sa.Column('erased_at', app.models.UTCDateTime(), nullable=True))
    op.add_column('idle_jobs', sa.Column('hold_usd', app.models.USDAmount(), nullable=True))
    op.add_column('idle_jobs', sa.Column('erased_at', app.models.UTCDateTime(), nullable=True))
    op.add_column('revenue_events', sa.Column('ledger_entry_id', sa.Integer(), nullable=True))
    op.create_index('uq_revenue_events_ledger_entry', 'revenue_events', ['ledger_entry_id'],
                    unique=True)


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 has it), not batch mode: batch mode
    # recreates each table (DROP TABLE), which the foreign keys of the rows that reference
    # businesses, idle_jobs or api_keys refuse. None of these columns is in a key or index
    # once the indexes below are gone.
    op.drop_index('uq_revenue_events_ledger_entry', table_name='revenue_events')
    op.drop_column('revenue_events', 'ledger_entry_id')
    for column in ('erased_at', 'hold_usd'):
        op.drop_column('idle_jobs', column)
    for column in ('erased_at', 'hold_usd', 'api_key_id'):
        op.drop_column('chat_jobs', column)
    op.drop_column('api_keys', 'monthly_limit_usd')
    op.drop_table('erasures')
    op.drop_table('chain_cursors')
    op.drop_table('deposits')
    op.drop_table('ledger_entries')
    op.drop_index('uq_businesses_deposit_ref', table_name='businesses')
    for column in ('removed_at', 'deposit_ref', 'retention_days', 'low_balance_usd',
                   'balance_usd'):
        op.drop_column('businesses', column)
