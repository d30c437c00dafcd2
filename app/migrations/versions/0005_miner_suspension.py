"""miners.suspended_at: operators suspend a wallet (POST /miners/{address}/suspend)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 11:50:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('miners') as batch:
        batch.add_column(sa.Column('suspended_at', app.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('miners') as batch:
        batch.drop_column('suspended_at')
