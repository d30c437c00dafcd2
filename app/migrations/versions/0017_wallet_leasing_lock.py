"""mia_leases_held(wallet): a wallet's leases, counted under its leasing lock (PostgreSQL only)

Revision ID: 0017
Revises: 0016

MINER_MAX_LEASES is exact only if two lease requests of one wallet never count the same room.
Until now a lock in Redis, taken around the lease statement, kept them apart (two Redis round
trips a lease). On PostgreSQL the lease statement now takes the lock itself: it calls this
function, which waits for the wallet's transaction-level advisory lock and then counts the
wallet's assigned jobs. Being VOLATILE, the function counts on a snapshot of its own, taken after
the lock was granted, so it sees every lease of the wallet committed before; the statement's own
snapshot, taken when it began, would not. The lock is held until the statement's transaction
ends, after its leases are written.

The lock's first key (1296646476, "MIAL") is app/leases/rules.py LEASING_LOCK; the tables are
every leasable kind's (chat and idle). SQLite has no such lock: there the Redis lock stays.
"""
from __future__ import annotations

from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION mia_leases_held(wallet integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1296646476, wallet);
    RETURN (SELECT count(*) FROM chat_jobs WHERE status = 'assigned' AND miner_id = wallet)
         + (SELECT count(*) FROM idle_jobs WHERE status = 'assigned' AND miner_id = wallet);
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS mia_leases_held(integer)")
