"""treasury: buybacks and their transactions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 06:09:06.835742

Token amounts are stored as decimal-digit strings (app.models.TokenAmount): 18-decimal base
units overflow BIGINT and SQLite's NUMERIC is a float. buybacks.active_slot is 1 for the one
active buyback and NULL otherwise; its UNIQUE constraint enforces "at most one active".
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('buybacks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('active_slot', sa.Integer(), nullable=True),
    sa.Column('usd_amount', sa.BigInteger(), nullable=False),
    sa.Column('quote_amount_in', sa.String(length=80), nullable=True),
    sa.Column('amount_out_min_total', sa.String(length=80), nullable=True),
    sa.Column('serv_received', sa.String(length=80), nullable=True),
    sa.Column('serv_burned', sa.String(length=80), nullable=True),
    sa.Column('quote_unspent', sa.String(length=80), nullable=True),
    sa.Column('triggered_by', sa.String(length=42), nullable=False),
    sa.Column('failure_reason', sa.String(length=1000), nullable=True),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('updated_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('completed_at', app.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('active_slot', name='uq_buybacks_active_slot')
    )
    op.create_table('buyback_txs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('buyback_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('nonce', sa.BigInteger(), nullable=False),
    sa.Column('raw_tx', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('amount_in', sa.String(length=80), nullable=True),
    sa.Column('amount_out_min', sa.String(length=80), nullable=True),
    sa.Column('amount_out', sa.String(length=80), nullable=True),
    sa.Column('block_number', sa.BigInteger(), nullable=True),
    sa.Column('gas_used', sa.BigInteger(), nullable=True),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('mined_at', app.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['buyback_id'], ['buybacks.id'], name='fk_buyback_txs_buyback_id'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tx_hash', name='uq_buyback_txs_tx_hash')
    )
    with op.batch_alter_table('buyback_txs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_buyback_txs_buyback_id'), ['buyback_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('buyback_txs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_buyback_txs_buyback_id'))

    op.drop_table('buyback_txs')
    op.drop_table('buybacks')
