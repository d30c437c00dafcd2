"""Long-polls take turns (app/queue.py PollGate): in a process, one poll at a time blocks in Redis
on a set of lists, the others wait in line; the poll whose turn it is takes what is there, up to
its batch, so jobs that arrived together go out together."""

from __future__ import annotations

import asyncio

from tests.leases.test_batch_protocol import batch
from tests.support.harness import running_app, until


async def blocked_in_redis(api) -> int:  # type: ignore[no-untyped-def]
    return int((await api.ctx.redis.info("clients"))["blocked_clients"])


def polls_waiting(api, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return api.ctx.queue.gate.waiting() == n
    return check


async def test_waiting_polls_block_in_redis_one_at_a_time_first_come_first_served(
        settings_factory, any_db, private_redis) -> None:  # type: ignore[no-untyped-def]
    # a Redis of its own: blocked_clients counts every client, other tests' polls too
    async with running_app(settings_factory(any_db, redis_url=private_redis.url)) as api:
        key = await api.api_key()
        miners = [await api.miner() for _ in range(6)]
        before = await blocked_in_redis(api)
        polls = []
        for m in miners:  # in this order
            polls.append(asyncio.create_task(batch(m, 16, wait=5)))
            await until(polls_waiting(api, len(polls)), timeout=5)
        # six miners wait; one connection of this process is blocked in Redis, not six
        assert await blocked_in_redis(api) - before == 1
        for n in range(3):  # jobs one at a time go to the polls in the order they came
            job_id = (await api.chat(key, f"q{n}")).json()["job_id"]
            jobs = await asyncio.wait_for(polls[n], 5)
            assert [j["job_id"] for j in jobs] == [job_id]
            assert not any(p.done() for p in polls[n + 1:])
        await until(polls_waiting(api, 3), timeout=5)
        assert await blocked_in_redis(api) - before == 1
        for p in polls[3:]:
            p.cancel()
        await asyncio.gather(*polls[3:], return_exceptions=True)


async def test_a_batch_pushed_at_once_goes_to_the_poll_whose_turn_it_is(settings_factory,
                                                                      any_db) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        ids = [(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(10)]
        # take them out of the list and put them back in ONE push while five miners wait
        q = api.ctx.queue
        popped = await q.pop_many("chat", 10, 0)
        assert sorted(popped) == sorted(ids)
        miners = [await api.miner() for _ in range(5)]
        polls = [asyncio.create_task(batch(m, 16, wait=3)) for m in miners]
        await until(polls_waiting(api, 5), timeout=5)
        await q.push_front("chat", *reversed(popped))
        got = await asyncio.gather(*polls)
        # one poll took the ten; the others' waits ran out with nothing (204). Without turns
        # Redis hands one id to each of the five blocked polls.
        assert sorted(len(g) for g in got) == [0, 0, 0, 0, 10], got
        assert sorted(j["job_id"] for g in got for j in g) == sorted(ids)
        assert q.gate.waiting() == 0  # nothing left behind in the process


async def test_a_poll_in_line_answers_when_its_own_wait_runs_out(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        a, b = await api.miner(), await api.miner()
        first = asyncio.create_task(batch(a, 16, wait=5))  # in turn, blocked in Redis
        await until(polls_waiting(api, 1), timeout=5)
        started = asyncio.get_running_loop().time()
        assert await batch(b, 16, wait=0.3) == []  # in line behind it: 204 after its 0.3 s
        assert asyncio.get_running_loop().time() - started < 2
        assert not first.done()
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await until(polls_waiting(api, 0), timeout=5)
