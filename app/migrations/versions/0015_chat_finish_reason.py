"""finish_reason on chat_jobs: why the miner's model server stopped generating

Revision ID: 0015
Revises: 0014

A miner reports the model server's finish reason with its result, signed with the output
("stop", "length", "tool_calls", ...); /v1 answers report it (app/openai_api/convert.py). NULL
for results of miners that do not send one, and for POST /chat jobs of old rows.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('chat_jobs', sa.Column('finish_reason', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('chat_jobs') as batch:
        batch.drop_column('finish_reason')
