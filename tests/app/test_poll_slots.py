"""A poll takes its long-poll slot (MINER_MAX_POLLS) only when it has to wait, in the same round
trip that found nothing to pop (app/queue.py TAKE): what is waiting is taken without one, and a
wallet whose slots are all taken still gets it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.leases import polls
from app.queue import JobQueue, PollSlot, PollsTaken
from tests.support.harness import running_app


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[JobQueue]:
    redis = Redis.from_url(redis_url)
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    yield JobQueue(redis, prefix)
    keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def slot_of(queue: JobQueue, cap: int = 2) -> PollSlot:
    return PollSlot(polls.key(queue.prefix, "0xWallet"), cap, ttl_s=60)


async def count(queue: JobQueue, slot: PollSlot) -> int:
    return int(await queue.redis.get(slot.key) or 0)


async def test_what_is_waiting_is_taken_without_a_slot(queue: JobQueue) -> None:
    await queue.push("chat", "a", "b", "c")
    slot = slot_of(queue)
    assert await queue.pop_from([queue.key("chat", "m"), queue.key("chat")], 2, 5, slot) == (
        queue.key("chat"), ["a", "b"])
    assert not slot.held and await count(queue, slot) == 0


async def test_a_poll_that_waits_holds_a_slot_and_is_woken(queue: JobQueue) -> None:
    slot = slot_of(queue)
    waiting = asyncio.create_task(queue.pop_many("chat", 4, 5, slot=slot))
    for _ in range(100):
        if slot.held:
            break
        await asyncio.sleep(0.01)
    assert slot.held and await count(queue, slot) == 1
    assert 0 < await queue.redis.ttl(slot.key) <= 60
    await queue.push("chat", "x")
    assert await asyncio.wait_for(waiting, 5) == ["x"]
    held = slot_of(queue)
    await queue.hold(held)  # a poll about to wait before it pops (trust's probation delay)
    assert held.held and await count(queue, held) == 2


async def test_a_wallet_out_of_slots_is_refused_only_when_it_would_wait(queue: JobQueue) -> None:
    full = slot_of(queue, cap=1)
    await queue.redis.set(full.key, 1, ex=60)  # its one slot, held by a poll elsewhere
    with pytest.raises(PollsTaken):
        await queue.pop_many("chat", 1, 0.5, slot=full)
    assert not full.held and await count(queue, full) == 1  # the refusal left the count alone
    await queue.push("chat", "y")
    assert await queue.pop_many("chat", 1, 0.5, slot=full) == ["y"]
    assert await count(queue, full) == 1


async def test_a_poll_cancelled_while_taking_its_slot_still_learns_it(queue: JobQueue) -> None:
    slot = slot_of(queue)
    waiting = asyncio.create_task(queue.pop_many("chat", 1, 5, slot=slot))
    await asyncio.sleep(0)  # the script is on its way; its client hangs up now
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await slot.settled()
    assert slot.held and await count(queue, slot) == 1  # so open_poll gives it back


async def test_a_wallet_at_its_poll_limit_still_gets_a_waiting_job(settings_factory,
                                                                   sqlite_url) -> None:
    async with running_app(settings_factory(sqlite_url, miner_max_polls=1)) as api:
        key = await api.api_key()
        a = await api.miner()
        name = polls.key(api.settings.redis_prefix, a.address)
        await api.ctx.redis.set(name, 1, ex=60)  # the wallet's one poll, in another process
        r = await a.client.get("/job/next", params={"wait": 5}, headers=a.auth)
        assert r.status_code == 429 and r.json()["error"] == "too_many_polls"
        job_id = (await api.chat(key, "waiting")).json()["job_id"]
        r = await a.client.get("/job/next", params={"wait": 5}, headers=a.auth)
        assert r.status_code == 200 and r.json()["job_id"] == job_id
        assert int(await api.ctx.redis.get(name)) == 1  # taken and given back by no one
