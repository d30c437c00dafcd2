"""chat_logs by business: an index on (business_id, timestamp)

Revision ID: 0018
Revises: 0017

A business's turns were found by a scan of every business's: the retention sweep (turns of one
business older than its cutoff, app/accounts/retention.py, each sweep), erasure and the data
export (app/accounts). chat_logs holds every message, so that scan grows with the network, not
with the business. The index serves `business_id = ?` alone and with `timestamp < ?`.

On PostgreSQL it is built CONCURRENTLY, outside the migration's transaction: a plain CREATE
INDEX would block every chat submission's insert into chat_logs while it builds. If a
concurrent build fails half-way it leaves an INVALID index of that name behind; drop it and
run the migration again.
"""
from __future__ import annotations

from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

NAME = "ix_chat_logs_business_id_timestamp"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "chat_logs", ["business_id", "timestamp"],
                            postgresql_concurrently=True)
    else:
        op.create_index(NAME, "chat_logs", ["business_id", "timestamp"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, table_name="chat_logs", postgresql_concurrently=True)
    else:
        op.drop_index(NAME, table_name="chat_logs")
