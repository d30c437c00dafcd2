"""Regressions: idle leases yield to chat after the pop too; idle ids have one spelling."""

from __future__ import annotations

import asyncio
import time

from app.models import IdleJob
from tests.idle.support import next_idle, post_idle_result, submit


async def test_idle_long_poll_yields_to_chat_that_arrives_while_it_waits(api):  # type: ignore[no-untyped-def]
    """A chat job queued during an idle long-poll must not be overtaken by an idle lease."""
    chat_key = await api.api_key("shop", "chat")
    idle_key = await api.api_key("outside-co", "idle")
    miner = await api.miner()
    poll = asyncio.create_task(next_idle(miner, wait=3))
    await asyncio.sleep(0.3)  # the miner is now blocked on the idle queue
    assert (await api.chat(chat_key, "a customer is waiting")).status_code == 202
    created = await submit(api, idle_key)
    assert await poll is None  # chat is waiting: no idle lease
    chat = await miner.next_job(wait=1)
    assert chat is not None
    assert (await miner.post_result(chat, "hello")).status_code == 200
    job = await next_idle(miner, wait=2)  # the idle id was given back, not lost
    assert job is not None and job["job_id"] == created["job_id"]


async def test_a_result_must_name_the_job_by_its_canonical_id(api):  # type: ignore[no-untyped-def]
    """"01" is not job 1: a result accepted under it would store a signature over "01", which
    nobody can check against the job's id, and would wake no waiter (they wait on "1")."""
    from app.auth import wallet

    key = await api.api_key("outside-co", "idle")
    miner = await api.miner()
    await submit(api, key)
    job = await next_idle(miner, wait=2)
    padded = dict(job, job_id="0" + job["job_id"])
    r = await post_idle_result(miner, padded, "an answer", tokens=2)
    assert r.status_code == 404, r.text
    r = await post_idle_result(miner, job, "an answer", tokens=2)
    assert r.status_code == 200
    async with api.ctx.db.sessions() as s:
        row = await s.get(IdleJob, int(job["job_id"]))
    assert await wallet.verify(miner.address, wallet.result_digest(str(row.id), row.result),
                               row.signature)


async def test_idle_long_poll_returns_soon_after_a_chat_job_arrives(api):  # type: ignore[no-untyped-def]
    """'204 at once while any chat job is waiting': also for chat that arrives during the
    idle long-poll, which must not hold the miner away from chat until its wait runs out."""
    chat_key = await api.api_key("shop", "chat")
    miner = await api.miner()
    started = time.perf_counter()
    poll = asyncio.create_task(next_idle(miner, wait=6))
    await asyncio.sleep(0.3)
    assert (await api.chat(chat_key, "a customer is waiting")).status_code == 202
    assert await poll is None
    assert time.perf_counter() - started < 2.5
