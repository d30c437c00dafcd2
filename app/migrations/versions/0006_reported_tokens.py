"""reported_tokens: the miner's own count of a result's output tokens

Revision ID: 0006
Revises: 0005

Results are billed and credited on the server's count (app/tokens.py), stored in output_tokens as
before; what the miner reported is kept next to it, for comparison only (/metrics shows miners
whose reports drift). NULL where the miner reported nothing, and for rows written before.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

TABLES = ("chat_jobs", "idle_jobs")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('reported_tokens', sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('reported_tokens')
