"""The hot-path asyncpg pool releases a connection without asyncpg's reset query (RESET ALL,
UNLISTEN *, CLOSE ALL, pg_advisory_unlock_all: one round trip per release), yet never hands
out a connection inside a transaction (app/db.py keep_session).

PostgreSQL only: SQLite has no such pool."""

from __future__ import annotations

import asyncpg
import pytest

from app.db import Database


@pytest.fixture
async def one_conn(postgres_db: str):  # type: ignore[no-untyped-def]
    """A Database whose hot-path pool holds ONE connection, so every acquire gets the same."""
    db = Database(postgres_db, pool_size=1)
    await db.open()
    try:
        yield db
    finally:
        await db.dispose()


async def _backend_and_setting(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT pg_backend_pid() AS pid, "
                              "current_setting('application_name') AS name")
    return row["pid"], row["name"]


async def test_release_sends_no_reset_query_so_session_state_leaks(one_conn: Database) -> None:
    """The accepted behaviour, and why the hot path must never SET without LOCAL: a session
    setting made in one acquire is still there in the next. With asyncpg's default reset
    (RESET ALL) it would be gone, so this fails if the reset query comes back."""
    async with one_conn.fast_reads() as conn:
        pid, _ = await _backend_and_setting(conn)
        await conn.execute("SET application_name = 'left-behind'")
    async with one_conn.fast_reads() as conn:
        assert await _backend_and_setting(conn) == (pid, "left-behind")


async def test_release_sends_no_statement_at_all(one_conn: Database) -> None:
    """Counted on the connection's own log of statements it sent: a release outside a
    transaction costs nothing on the wire."""
    sent: list[str] = []
    async with one_conn.fast_reads() as conn:
        raw = conn._con  # type: ignore[attr-defined]  # the pool's proxy hides the connection
        raw.add_query_logger(lambda record: sent.append(record.query))
        await conn.fetchval("SELECT 1")
    async with one_conn.fast_reads() as conn:
        await conn.fetchval("SELECT 2")
    assert sent == ["SELECT 1", "SELECT 2"]


async def test_a_failed_transaction_is_rolled_back_on_release(one_conn: Database) -> None:
    """An exception inside fast() rolls back; and a connection released inside a transaction
    its code forgot (or failed) to end is rolled back by asyncpg's release all the same: the
    next user is outside any transaction and sees none of its writes."""
    async with one_conn.fast_reads() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS pool_probe (n int)")
        await conn.execute("TRUNCATE pool_probe")
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with one_conn.fast() as unit:
            await unit.conn.execute("INSERT INTO pool_probe VALUES (1)")
            await unit.conn.execute("SELECT 1 / 0")
    # Unmanaged: BEGIN by hand, a write, a failing statement, then released as it is.
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with one_conn.fast_reads() as conn:
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO pool_probe VALUES (2)")
            await conn.execute("SELECT 1 / 0")
    async with one_conn.fast_reads() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM pool_probe") == 0
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO pool_probe VALUES (3)")  # open, not failed
    async with one_conn.fast_reads() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM pool_probe") == 0
        await conn.execute("DROP TABLE pool_probe")
