"""buyback_txs.block_hash: the hash of the block a transaction's outcome was recorded from

Revision ID: 0010
Revises: 0009

Finality re-reads every recorded receipt of an active buyback at each confirmation check and
once more before `burned`; comparing the block hash (not only the number) sees a reorg that
re-mined the transaction at the same height, where its outcome may differ.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('buyback_txs', sa.Column('block_hash', sa.String(length=66), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('buyback_txs') as batch:
        batch.drop_column('block_hash')
