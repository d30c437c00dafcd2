"""chat_jobs.model and chat_jobs.options: what an OpenAI-compatible request asked for

Revision ID: 0007
Revises: 0006

`model` is the model a /v1/chat/completions client named: only miners that declare it lease the
job (app/queue.py keeps one list per model). NULL for POST /chat jobs, which any miner takes.
`options` is the request's sampling and delivery choices as JSON (max_tokens, temperature, top_p,
stop, stream), handed to the miner with the lease. NULL where nothing was asked.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('chat_jobs', sa.Column('model', sa.String(length=128), nullable=True))
    op.add_column('chat_jobs', sa.Column('options', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('chat_jobs') as batch:
        batch.drop_column('options')
        batch.drop_column('model')
