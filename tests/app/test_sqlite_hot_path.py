"""The chat hot path on SQLite's own driver (app/lite.py, app/chat/lite.py): what it writes is
what the ORM side reads and compares (times, statuses), and pg.py's statements run on SQLite
through app/sqltext.py. The end-to-end behaviour is tested on both databases elsewhere
(tests/app/test_chat_cycle.py, tests/leases, tests/chat)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.chat import lite as chat_lite
from app.chat import pg
from app.db import Database, LiteUnit
from app.leases import rules
from app.leases.protocol import Completion
from app.lite import db_time, read_time
from app.models import ChatJob, ChatLog, JobStatus, Miner, utcnow
from app.sqltext import SQLITE_MIN_VERSION, sqlite


def test_statements_in_sqlite_spelling() -> None:
    assert sqlite("SELECT a FROM t WHERE id = ANY($1::text[]) AND b = $2 AND c = $12") == (
        "SELECT a FROM t WHERE id IN (SELECT value FROM json_each(?1)) AND b = ?2 AND c = ?12")
    assert sqlite("WHERE id = ANY($3)") == "WHERE id IN (SELECT value FROM json_each(?3))"


def test_sqlite_is_new_enough() -> None:
    assert sqlite3.sqlite_version_info >= SQLITE_MIN_VERSION


@pytest.mark.parametrize("text", [pg.READ, rules.holders_sql("chat_jobs", pg.VET_COLUMN),
                                  rules.holding_sql(["chat_jobs", "idle_jobs"])])
def test_pg_reads_prepare_on_sqlite(sqlite_url: str, text: str) -> None:
    conn = sqlite3.connect(sqlite_url.split("///", 1)[1])
    try:
        conn.execute("EXPLAIN " + sqlite(text), (None,))  # each takes one parameter, $1
    finally:
        conn.close()


def test_time_format_is_the_orms() -> None:
    now = utcnow()
    assert db_time(now) == now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert read_time(db_time(now)) == now


async def test_cycle_on_the_driver_reads_back_through_the_orm(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.open()
    try:
        assert db.lite is not None
        async with db.fast() as unit:
            assert isinstance(unit, LiteUnit)
        async with db.transaction() as session:
            session.add(Miner(name="m", address="0x" + "1" * 40))
        async with db.reads() as session:
            miner_id = (await session.execute(select(Miner.id))).scalar_one()
        now = utcnow()
        assert await chat_lite.submit(db.lite, job_id="j1", business_id=None, session_id="s1",
                                      may_claim=True, prompt="hi", context=None, now=now,
                                      options='{"max_tokens": 3}')
        # an anonymous caller may not continue a session that does not exist
        assert not await chat_lite.submit(db.lite, job_id="j2", business_id=None,
                                          session_id="nope", may_claim=False, prompt="x",
                                          context=None, now=now)
        [got] = await chat_lite.lease(db.lite, ["j1", "zz"], miner_id, 30, now, 10)
        assert got.job_id == "j1" and got.attempt == 1 and got.history == []
        async with db.reads() as session:
            job = await session.get(ChatJob, "j1")
            assert job.status == JobStatus.assigned and job.created_at == now
            assert job.lease_expires_at == now + timedelta(seconds=30)
        done = Completion("j1", "j1", got.lease_id, miner_id, "a b c d", 4, 9, "0xs", now,
                          "stop")
        wrong = Completion("j1", "j1", "other", miner_id, "x", 1, 1, "0xs", now)
        [won, lost] = await chat_lite.complete(db.lite, [done, wrong])
        assert lost is None and won is not None
        assert won[1] == 3  # capped at the job's max_tokens, as options.capped
        again = await chat_lite.complete(db.lite, [done])  # not current any more
        assert again == [None]
        job = await chat_lite.read(db.lite, "j1")
        assert job is not None and job.status == JobStatus.completed
        assert job.response == "a b c d" and job.output_tokens == 3
        assert job.finish_reason == "stop" and job.completed_at == now
        async with db.reads() as session:
            miner = await session.get(Miner, miner_id)
            assert (miner.job_count, miner.tokens_generated) == (1, 3)
            turns = (await session.execute(select(ChatLog.role).where(
                ChatLog.session_id == "s1").order_by(ChatLog.id))).scalars().all()
            assert turns == ["user", "assistant"]
        # the next turn's lease carries the session's history
        later = now + timedelta(seconds=1)
        assert await chat_lite.submit(db.lite, job_id="j3", business_id=None, session_id="s1",
                                      may_claim=False, prompt="more", context=None, now=later)
        [nxt] = await chat_lite.lease(db.lite, ["j3"], miner_id, 30, later, 10)
        assert [(h.role, h.content) for h in nxt.history] == [("user", "hi"),
                                                              ("assistant", "a b c d")]
        # the lease written by the driver expires for the ORM's reaper
        async with db.transaction() as session:
            requeued, failed = await rules.reap_expired(
                session, ChatJob, later + timedelta(seconds=31), max_attempts=3)
        assert requeued == ["j3"] and failed == []
    finally:
        await db.dispose()


async def test_a_busy_database_sends_the_unit_to_the_waiting_thread(sqlite_url: str) -> None:
    """The loop's connection never waits for the write lock: while another connection holds
    it, the unit runs on the writer thread, which waits, and commits once the lock is free."""
    import asyncio

    db = Database(sqlite_url)
    await db.open()
    other = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    try:
        assert db.lite is not None
        other.execute("BEGIN IMMEDIATE")
        unit = asyncio.create_task(chat_lite.submit(
            db.lite, job_id="j1", business_id=None, session_id="s1", may_claim=True,
            prompt="hi", context=None, now=utcnow()))
        await asyncio.sleep(0.3)
        assert not unit.done()  # waiting on the thread, not failed with "database is locked"
        other.execute("COMMIT")
        assert await asyncio.wait_for(unit, 10)
        assert (await chat_lite.read(db.lite, "j1")) is not None
    finally:
        other.close()
        await db.dispose()
