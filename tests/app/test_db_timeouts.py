"""A database that hangs or refuses becomes a 503 JSON error with Retry-After, within
DB_COMMAND_TIMEOUT_S / DB_POOL_TIMEOUT_S: never a 500, never a hung request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.exc import IntegrityError

from app.localredis import free_port
from app.main import _dependency_down
from tests.support.harness import running_app, until


def assert_503(r, code: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["error"] == code and r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1


@contextlib.asynccontextmanager
async def table_locked(database_url: str, table: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session holds an exclusive lock on `table`: every read of it waits."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def _waiting_on_locks(database_url: str) -> int:
    # A connection of its own: inside the locker's transaction pg_stat_activity is a snapshot.
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"))
    finally:
        await conn.close()


async def test_a_hung_statement_is_a_503(postgres_db, settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(postgres_db, db_command_timeout_s=0.5,
                                run_maintenance_in_api=False)
    async with running_app(settings) as api:
        assert (await api.client.get("/burns")).status_code == 200
        async with table_locked(postgres_db, "buybacks"):
            r = await asyncio.wait_for(api.client.get("/burns"), 20)
            assert_503(r, "dependency_timeout")
        assert (await api.client.get("/burns")).status_code == 200  # and recovers


async def test_an_exhausted_pool_is_a_503(postgres_db, settings_factory) -> None:  # type: ignore[no-untyped-def]
    # 1 pooled connection + 2 overflow; statements may wait long, the pool only briefly
    settings = settings_factory(postgres_db, db_pool_size=1, db_pool_timeout_s=0.3,
                                db_command_timeout_s=30, run_maintenance_in_api=False)
    async with running_app(settings) as api:
        async with table_locked(postgres_db, "buybacks"):
            stuck = [asyncio.create_task(api.client.get("/burns")) for _ in range(3)]

            async def all_three_wait() -> bool:
                return await _waiting_on_locks(postgres_db) >= 3
            await until(all_three_wait, 15)
            r = await asyncio.wait_for(api.client.get("/burns"), 20)
            assert_503(r, "database_busy")
            # /health asks on a connection of its own: a busy pool is not a dead database
            health = await asyncio.wait_for(api.client.get("/health"), 5)
            assert health.status_code == 200 and health.json()["checks"]["database"]["ok"]
        assert [(await t).status_code for t in stuck] == [200, 200, 200]


async def test_an_unreachable_database_is_a_503(settings_factory) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    async with running_app(settings_factory(url, run_maintenance_in_api=False)) as api:
        assert_503(await api.client.get("/burns"), "dependency_unavailable")


async def test_other_database_errors_stay_500s() -> None:
    exc = IntegrityError("INSERT ...", {}, Exception("duplicate key"))
    with pytest.raises(IntegrityError):
        await _dependency_down(None, exc)  # type: ignore[arg-type]
