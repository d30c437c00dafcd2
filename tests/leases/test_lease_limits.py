"""Leases with limits: one delivery's whole lease (LEASE_MAX_TOTAL_S), the leases a wallet holds
(MINER_MAX_LEASES) and the long-polls it keeps open (MINER_MAX_POLLS), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from app.leases import endpoints, polls
from app.models import ChatJob, IdleJob, Miner
from tests.idle.support import next_idle, submit
from tests.leases.test_batch_protocol import batch
from tests.support.harness import Harness, SimMiner, running_app, until


async def extend(m: SimMiner, job: dict, seconds: int | None = None) -> httpx.Response:
    body = {"lease_id": job["lease_id"]} | ({"seconds": seconds} if seconds else {})
    return await m.client.post(f"/job/{job['job_id']}/extend", json=body, headers=m.auth)


async def test_extensions_stop_at_the_total_lease_and_the_job_is_redelivered(settings_factory,
                                                                             any_db) -> None:
    settings = settings_factory(any_db, lease_seconds=1, lease_max_total_s=4)
    async with running_app(settings) as api:
        key = await api.api_key()
        a, b = await api.miner(), await api.miner()
        job_id = (await api.chat(key, "hold me forever")).json()["job_id"]
        job = await a.next_job(wait=2)
        assert job["attempt"] == 1
        for _ in range(5):  # within the total: each answers 200 as before
            r = await extend(a, job, seconds=2)
            assert r.status_code == 200, r.text
        r = await extend(a, job, seconds=10)  # would end past assigned_at + 4 s
        assert r.status_code == 409
        assert r.json()["error"] == "lease_limit"
        assert "LEASE_MAX_TOTAL_S" in r.json()["detail"]
        r = await extend(b, job, seconds=1)  # someone else's lease is still just not current
        assert (r.status_code, r.json()["error"]) == (409, "lease_not_current")

        # a keeps asking; the lease runs out as usual and b gets the job as its second delivery
        async def b_has_it() -> bool:
            await extend(a, job, seconds=2)
            again = await b.next_job(wait=0.5)
            if again is not None:
                b_has_it.job = again  # type: ignore[attr-defined]
            return again is not None

        await until(b_has_it, timeout=15)
        again = b_has_it.job  # type: ignore[attr-defined]
        assert (again["job_id"], again["attempt"]) == (job_id, 2)
        r = await extend(a, job, seconds=1)
        assert (r.status_code, r.json()["error"]) == (409, "lease_not_current")
        assert (await b.post_result(again, "done")).status_code == 200


async def test_the_total_lease_still_lets_a_result_in_before_it_ends(settings_factory,
                                                                     any_db) -> None:
    async with running_app(settings_factory(any_db, lease_max_total_s=60)) as api:
        key = await api.api_key()
        a = await api.miner()
        await api.chat(key, "long one")
        job = await a.next_job(wait=2)
        assert (await extend(a, job, seconds=120)).json()["error"] == "lease_limit"
        assert (await extend(a, job, seconds=50)).status_code == 200
        assert (await a.post_result(job, "finished in time")).status_code == 200


async def leases_of(api: Harness, m: SimMiner) -> int:
    """The wallet's leases, as the database has them."""
    async with api.ctx.db.sessions() as s:
        return sum([(await s.execute(
            select(func.count()).select_from(model).join(Miner, Miner.id == model.miner_id)
            .where(model.status == "assigned", Miner.address == m.address))).scalar_one()
            for model in (ChatJob, IdleJob)])


async def test_a_wallet_holds_at_most_miner_max_leases_chat_and_idle_together(
        settings_factory, any_db) -> None:
    async with running_app(settings_factory(any_db, miner_max_leases=3)) as api:
        key = await api.api_key(scopes="chat,idle")
        for i in range(6):
            await api.chat(key, f"question {i}")
        a, b = await api.miner(), await api.miner()
        jobs = await batch(a, 10)
        assert len(jobs) == 3  # the batch is trimmed to the cap
        for path in ("/job/next", "/job/batch", "/idle-job/next"):
            r = await a.client.get(path, params={"wait": 0}, headers=a.auth)
            assert r.status_code == 429, (path, r.text)
            assert r.json()["error"] == "too_many_leases"
            assert int(r.headers["Retry-After"]) >= 1
        assert len(await batch(b, 10)) == 3  # nothing was popped in vain: b gets the other three
        assert await leases_of(api, a) == 3

        assert (await a.post_result(jobs[0], "one")).status_code == 200
        idle = await submit(api, key)
        got = await next_idle(a)  # one lease freed: idle counts against the same cap
        assert got is not None and got["job_id"] == idle["job_id"]
        r = await a.client.get("/job/next", headers=a.auth)
        assert r.status_code == 429
        assert await leases_of(api, a) == 3


async def twenty_batches_at_once(api: Harness) -> tuple[SimMiner, SimMiner, list[httpx.Response]]:
    """60 queued chats, then 20 concurrent GET /job/batch?max=10 of one wallet (a); b is idle."""
    key = await api.api_key()
    await asyncio.gather(*(api.chat(key, f"q{i}") for i in range(60)))
    a, b = await api.miner(), await api.miner()
    answers = await asyncio.gather(*(a.client.get("/job/batch", params={"max": 10},
                                                  headers=a.auth) for _ in range(20)))
    return a, b, list(answers)


async def test_concurrent_requests_of_one_wallet_stay_under_the_cap(settings_factory,
                                                                    any_db) -> None:
    async with running_app(settings_factory(any_db, miner_max_leases=5)) as api:
        a, b, answers = await twenty_batches_at_once(api)
        # 204 too: a request may find the queue empty while the others hold what they popped
        assert {200, 429} <= {r.status_code for r in answers} <= {200, 204, 429}
        assert sum(len(r.json()["jobs"]) for r in answers if r.status_code == 200) == 5
        assert await leases_of(api, a) == 5
        # what a's requests popped went back: every job still queued in the database is in
        # Redis (once or more, and leased ones may linger: the reconciler may re-push ids the
        # requests held for a moment; a stale or duplicate id is skipped at lease time)
        async with api.ctx.db.sessions() as s:
            queued = set((await s.execute(select(ChatJob.id).where(
                ChatJob.status == "queued"))).scalars())
        assert len(queued) == 55 and queued <= await api.ctx.queue.members("chat")
        assert len(await batch(b, 10)) == 5


async def test_requests_of_one_wallet_in_different_api_processes_stay_under_the_cap(
        settings_factory, any_db, monkeypatch) -> None:
    # Each API process has its own in-process lock per wallet: a fresh one per request is what
    # requests of one wallet spread over several processes see. Only the lock in Redis is shared.
    monkeypatch.setattr(endpoints, "_wallet_lock", lambda miner_id: asyncio.Lock())
    async with running_app(settings_factory(any_db, miner_max_leases=5)) as api:
        a, b, answers = await twenty_batches_at_once(api)
        assert sum(len(r.json()["jobs"]) for r in answers if r.status_code == 200) == 5
        assert await leases_of(api, a) == 5
        assert len(await batch(b, 10)) == 5  # what a's requests popped in vain went back


async def test_a_long_poll_that_wakes_past_the_cap_gives_the_job_back(settings_factory,
                                                                      any_db) -> None:
    async with running_app(settings_factory(any_db, miner_max_leases=2)) as api:
        key = await api.api_key(scopes="chat,idle")
        a, b = await api.miner(), await api.miner()
        poll = asyncio.create_task(a.client.get("/job/batch", params={"max": 2, "wait": 10},
                                                headers=a.auth))
        await asyncio.sleep(0.3)  # a waits with room for two chat jobs
        for _ in range(2):
            await submit(api, key)
        assert await next_idle(a) is not None and await next_idle(a) is not None  # now full
        job_id = (await api.chat(key, "for whoever has room")).json()["job_id"]
        r = await asyncio.wait_for(poll, 10)
        assert r.status_code == 429 and r.json()["error"] == "too_many_leases"
        assert await leases_of(api, a) == 2
        job = await b.next_job(wait=2)  # the job went back to the front, attempt unspent
        assert (job["job_id"], job["attempt"]) == (job_id, 1)


async def test_a_wallet_keeps_at_most_miner_max_polls_long_polls_open(settings_factory,
                                                                      any_db) -> None:
    async with running_app(settings_factory(any_db, miner_max_polls=2)) as api:
        key = await api.api_key()
        a, b = await api.miner(), await api.miner()
        name = polls.key(api.settings.redis_prefix, a.address)
        waiting = [asyncio.create_task(a.client.get("/job/next", params={"wait": 10},
                                                    headers=a.auth)) for _ in range(2)]

        async def both_in() -> bool:
            return await api.ctx.redis.get(name) in (b"2", "2")

        await until(both_in, timeout=5)
        assert 0 < await api.ctx.redis.ttl(name) <= api.settings.miner_max_wait_s + polls.MARGIN_S
        for path in ("/job/next", "/job/batch", "/idle-job/next"):
            r = await a.client.get(path, params={"wait": 5}, headers=a.auth)
            assert r.status_code == 429, (path, r.text)
            assert r.json()["error"] == "too_many_polls"
            assert r.headers["Retry-After"] == "1"
        r = await a.client.get("/job/next", params={"wait": 0}, headers=a.auth)
        assert r.status_code == 204  # a request that does not wait takes no slot
        r = await b.client.get("/job/next", params={"wait": 0.2}, headers=b.auth)
        assert r.status_code == 204  # the limit is per wallet

        for i in range(2):
            await api.chat(key, f"wake {i}")
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert sorted(r.status_code for r in answers) == [200, 200]
        assert await api.ctx.redis.exists(name) == 0  # every slot given back, no key left
        late = asyncio.create_task(a.client.get("/job/next", params={"wait": 0.3},
                                                headers=a.auth))
        assert (await late).status_code == 204
