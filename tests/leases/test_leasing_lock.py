"""A wallet's leasing lock on PostgreSQL: the lease statement takes it itself (mia_leases_held,
migration 0017) and an ORM lease takes it first in its transaction (rules.lease_lock), so a lease
of the wallet waits for another one's commit and then counts it. Without the lock, the second
statement's snapshot would not see the first one's uncommitted leases and would lease past the
cap. Each test holds the first lease open in a transaction of its own to make the race certain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import select

from app.chat import pg as chat_pg
from app.leases import protocol, rules
from app.models import Miner, utcnow
from tests.idle.support import submit
from tests.leases.test_lease_limits import leases_of
from tests.support.harness import Harness, SimMiner, running_app

WAITED_S = 0.4  # long enough for a lease that does not wait to have finished


async def miner_id(api: Harness, m: SimMiner) -> int:
    async with api.ctx.db.sessions() as s:
        return (await s.execute(select(Miner.id).where(Miner.address == m.address))).scalar_one()


@asynccontextmanager
async def open_lease(api: Harness, keys: list[str], wallet: int, cap: int
                     ) -> AsyncIterator[tuple[asyncpg.Connection, chat_pg.Leased]]:
    """The lease statement for `keys`, run in a transaction that stays open until the block
    ends (then it commits)."""
    assert api.ctx.db.pg is not None
    async with api.ctx.db.pg.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn, await chat_pg.lease(conn, keys, wallet, 60, utcnow(), 8, cap=cap)
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()


async def test_a_second_lease_statement_waits_for_the_first_and_counts_it(
        settings_factory, postgres_db) -> None:
    async with running_app(settings_factory(postgres_db, miner_max_leases=5)) as api:
        key = await api.api_key()
        ids = [(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(6)]
        a = await api.miner()
        wallet = await miner_id(api, a)
        assert api.ctx.db.pg is not None
        async with open_lease(api, ids[:3], wallet, cap=5) as (_, first):
            assert len(first.jobs) == 3 and first.held == 0
            async with api.ctx.db.pg.acquire() as other:
                second = asyncio.create_task(chat_pg.lease(other, ids[3:], wallet, 60,
                                                           utcnow(), 8, cap=5))
                await asyncio.sleep(WAITED_S)
                assert not second.done()  # it waits for the wallet's lock
        got = await asyncio.wait_for(second, 10)
        assert got.held == 3  # counted the first statement's leases, committed meanwhile
        assert [j.job_id for j in got.jobs] == ids[3:5] and got.over == ids[5:]
        assert await leases_of(api, a) == 5


async def test_a_lease_through_the_orm_waits_for_the_statements_lock(settings_factory,
                                                                     postgres_db) -> None:
    # idle jobs lease through SQLAlchemy (no FastPath): the same lock, taken in its transaction
    async with running_app(settings_factory(postgres_db, miner_max_leases=3)) as api:
        key = await api.api_key(scopes="chat,idle")
        ids = [(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(3)]
        assert set(await api.ctx.queue.pop_many("chat", 3, 0)) == set(ids)  # as a lease pops
        await submit(api, key)  # (idle yields to chat waiting in the queue)
        a = await api.miner()
        wallet = await miner_id(api, a)
        async with open_lease(api, ids, wallet, cap=3) as (_, first):
            assert len(first.jobs) == 3
            idle = asyncio.create_task(a.client.get("/idle-job/next", params={"wait": 0},
                                                    headers=a.auth))
            await asyncio.sleep(WAITED_S)
            assert not idle.done()
        r = await asyncio.wait_for(idle, 10)
        assert r.status_code == 429 and r.json()["error"] == "too_many_leases"
        assert await leases_of(api, a) == 3


async def test_the_lock_counts_every_leasable_kind(settings_factory, postgres_db) -> None:
    async with running_app(settings_factory(postgres_db)) as api:
        assert api.ctx.db.pg is not None
        source = await api.ctx.db.pg.fetchval(
            "SELECT prosrc FROM pg_proc WHERE proname = 'mia_leases_held'")
        assert f"pg_advisory_xact_lock({rules.LEASING_LOCK}, wallet)" in source
        tables = protocol.leasable_tables()
        assert set(tables) == {"chat_jobs", "idle_jobs"}
        for table in tables:
            assert f"FROM {table} WHERE status = 'assigned' AND miner_id = wallet" in source


async def test_leases_on_postgresql_take_no_lock_in_redis(settings_factory, postgres_db,
                                                          monkeypatch) -> None:
    async with running_app(settings_factory(postgres_db, miner_max_leases=5)) as api:
        def no_redis_lock(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise AssertionError("a lease took the Redis leasing lock on PostgreSQL")

        monkeypatch.setattr(api.ctx.redis, "lock", no_redis_lock)
        key = await api.api_key(scopes="chat,idle")
        await api.chat(key, "q")
        await submit(api, key)
        a = await api.miner()
        assert await a.next_job(wait=0) is not None
        r = await a.client.get("/idle-job/next", params={"wait": 0}, headers=a.auth)
        assert r.status_code == 200, r.text
