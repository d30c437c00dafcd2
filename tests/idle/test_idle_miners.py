"""Idle jobs through miners: leases like chat, revenue computed by the server, one ledger row."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from sqlalchemy import select

from app.models import Miner
from app.tokens import count_now
from tests.idle.support import (PRICE, auth, events_for, get_job, ledger, next_idle,
                                post_idle_result, submit)
from tests.support.harness import running_app


async def test_idle_job_through_a_miner(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("outside-co", "idle")
        miner = await api.miner("gpu-1")
        created = await submit(api, key, "Summarise the French revolution", max_tokens=100)
        assert created["status"] == "queued"
        assert Decimal(created["estimated_cost_usd"]) == Decimal("0.0002")  # 100 x 0.002 / 1000

        job = await next_idle(miner, wait=2)
        assert job is not None and job["job_id"] == created["job_id"]
        assert job["kind"] == "idle" and job["max_tokens"] == 100 and job["attempt"] == 1
        assert job["prompt"] == "Summarise the French revolution"

        # The seed let miners post usd_earned; it is ignored. So is the miner's token count:
        # the output is 9 tokens to Mixtral's tokenizer, and 9 are billed.
        r = await post_idle_result(miner, job, "It began in 1789.", tokens=37, usd_earned=1000)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["output_tokens"] == 9
        assert Decimal(body["usd_earned"]) == Decimal("0.000018")  # 9 x 0.002 / 1000

        seen = await get_job(api, key, created["job_id"])
        assert seen["status"] == "completed" and seen["result"] == "It began in 1789."
        assert seen["processed_by"] == "miner" and Decimal(seen["usd_earned"]) == Decimal("0.000018")
        assert seen["output_tokens"] == 9
        events = await events_for(api, created["job_id"])
        assert [(e.source, e.amount_usd, e.output_tokens) for e in events] == [
            ("miner", Decimal("0.000018"), 9)]

        # the same result again is idempotent; another output is a conflict; no second event
        again = await post_idle_result(miner, job, "It began in 1789.", tokens=37)
        assert again.status_code == 200 and again.json() == body
        other = await post_idle_result(miner, job, "Something else", tokens=99)
        assert other.status_code == 409 and other.json()["error"] == "already_completed"
        assert len(await events_for(api, created["job_id"])) == 1

        async with api.ctx.db.sessions() as s:
            row = (await s.execute(select(Miner).where(Miner.address == miner.address))).scalar_one()
        assert (row.job_count, row.tokens_generated) == (1, 9)


async def test_our_count_is_billed_up_to_max_tokens(api):  # type: ignore[no-untyped-def]
    key = await api.api_key("outside-co", "idle")
    miner = await api.miner()
    await submit(api, key, max_tokens=10)
    job = await next_idle(miner, wait=2)
    long = "one two three four five six seven eight nine ten eleven twelve"
    r = await post_idle_result(miner, job, long, tokens=5000)
    assert r.status_code == 200 and r.json()["output_tokens"] == 10
    assert Decimal(r.json()["usd_earned"]) == 10 * PRICE / 1000
    # no count reported: the output is counted all the same
    created = await submit(api, key, max_tokens=10)
    job = await next_idle(miner, wait=2)
    r = await post_idle_result(miner, job, "three little words")
    assert r.status_code == 200 and r.json()["output_tokens"] == 3
    assert len(await events_for(api, created["job_id"])) == 1


async def test_chat_comes_first(api):  # type: ignore[no-untyped-def]
    chat_key = await api.api_key("shop", "chat")
    idle_key = await api.api_key("outside-co", "idle")
    miner = await api.miner()
    await submit(api, idle_key)
    assert (await api.chat(chat_key, "a customer is waiting")).status_code == 202
    started = time.perf_counter()
    assert await next_idle(miner, wait=5) is None  # at once, not after 5 s
    assert time.perf_counter() - started < 1
    chat = await miner.next_job(wait=1)
    assert (await miner.post_result(chat, "hello")).status_code == 200
    assert (await next_idle(miner, wait=2)) is not None


async def test_results_from_non_holders_and_forgeries_earn_nothing(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(lease_seconds=1)) as api:
        key = await api.api_key("outside-co", "idle")
        holder, thief = await api.miner("holder"), await api.miner("thief")
        created = await submit(api, key)
        job = await next_idle(holder, wait=2)

        # a miner that does not hold the lease, with its own valid signature
        stolen = await post_idle_result(thief, job, "mine now", tokens=10)
        assert stolen.status_code == 409 and stolen.json()["error"] == "lease_not_current"
        # the holder's lease id with a signature by someone else
        forged_sig = thief.sign_result(job["job_id"], "forged")
        r = await post_idle_result(holder, job, "forged", tokens=10, signature=forged_sig)
        assert r.status_code == 401 and r.json()["error"] == "invalid_result_signature"
        # a signature over another job id
        r = await post_idle_result(holder, job, "x", signature=holder.sign_result("999", "x"))
        assert r.status_code == 401
        # unknown and malformed job ids
        for bad in ("999999", "abc", "-1", "0", "99999999999"):
            r = await post_idle_result(holder, {**job, "job_id": bad}, "x")
            assert r.status_code == 404, (bad, r.text)
        assert (await ledger(api))[1] == 0

        # lease expires, the job is redelivered; the late first holder earns nothing
        again = await next_idle(thief, wait=5)
        assert again["job_id"] == job["job_id"] and again["attempt"] == 2
        late = await post_idle_result(holder, job, "late", tokens=10, usd_earned=99)
        assert late.status_code == 409
        assert (await post_idle_result(thief, again, "on time", tokens=4)).status_code == 200
        total, n, statuses = await ledger(api)  # "on time" is 2 tokens
        assert (total, n, statuses) == (Decimal("0.000004"), 1, {"completed": 1})
        assert (await get_job(api, key, created["job_id"]))["result"] == "on time"


async def test_extend_and_release(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(lease_seconds=1)) as api:
        key = await api.api_key("outside-co", "idle")
        a, b = await api.miner(), await api.miner()
        await submit(api, key)
        job = await next_idle(a, wait=2)
        for _ in range(3):
            await asyncio.sleep(0.6)
            r = await api.client.post(f"/idle-job/{job['job_id']}/extend",
                                      json={"lease_id": job["lease_id"]}, headers=a.auth)
            assert r.status_code == 200, r.text
        assert await next_idle(b, wait=0) is None
        r = await api.client.post(f"/idle-job/{job['job_id']}/extend",
                                  json={"lease_id": job["lease_id"]}, headers=b.auth)
        assert r.status_code == 409
        r = await api.client.post("/idle-job/nope/extend", json={"lease_id": "x"}, headers=a.auth)
        assert r.status_code == 404
        r = await api.client.post(f"/idle-job/{job['job_id']}/release",
                                  json={"lease_id": job["lease_id"], "reason": "oom"},
                                  headers=a.auth)
        assert r.json() == {"job_id": job["job_id"], "status": "queued"}
        again = await next_idle(b, wait=2)
        assert again["job_id"] == job["job_id"]
        assert (await post_idle_result(b, again, "done", tokens=1)).status_code == 200


async def test_owner_only_and_wait(api):  # type: ignore[no-untyped-def]
    key = await api.api_key("outside-co", "idle")
    other = await api.api_key("someone-else", "idle")
    miner = await api.miner()
    created = await submit(api, key)
    r = await api.client.get(f"/idle-job/{created['job_id']}", headers=auth(other))
    assert r.status_code == 404
    waiter = asyncio.create_task(get_job(api, key, created["job_id"], wait=10))
    job = await next_idle(miner, wait=2)
    await asyncio.sleep(0.05)
    assert (await post_idle_result(miner, job, "answer", tokens=2)).status_code == 200
    started = time.perf_counter()
    done = await waiter
    assert done["status"] == "completed" and time.perf_counter() - started < 3


RESULTS = 150  # 7-8 a miner: enough for 20 miners to lease and answer side by side all along


async def test_150_results_from_20_miners_ledger_to_the_cent(any_db, settings_factory):  # type: ignore[no-untyped-def]
    # What is proven is exactness under concurrency (each job completed once, its revenue
    # billed on our token count, the sum to the micro-dollar), not throughput: bench/ measures
    # that. 1,000 results proved the same as 300, and 300 as 150, in 2-3x the time.
    # A bulk buyer's burst of submissions can pass the per-key rate limit whenever the machine
    # is quick enough; the ledger, not the limit, is tested here
    settings = settings_factory(any_db, lease_seconds=30, rate_limit_key_per_s=10_000,
                                rate_limit_key_burst=10_000)
    async with running_app(settings) as api:
        key = await api.api_key("bulk-buyer", "idle")
        ids = set()
        for i in range(RESULTS):
            ids.add((await submit(api, key, f"prompt {i}", max_tokens=4096))["job_id"])
        miners = [await api.miner(f"m{i}") for i in range(20)]
        expected: dict[str, Decimal] = {}

        async def work(m) -> None:  # type: ignore[no-untyped-def]
            while True:
                job = await next_idle(m, wait=0.2)
                if job is None:
                    return
                tokens = (int(job["job_id"]) * 37) % 4000 + 1
                r = await post_idle_result(m, job, f"answer {job['job_id']}", tokens=tokens,
                                           usd_earned=123.45)
                assert r.status_code == 200, r.text
                expected[job["job_id"]] = Decimal(r.json()["usd_earned"])

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(work(m) for m in miners)), 240)
        elapsed = time.perf_counter() - started

        assert set(expected) == ids
        total, n, statuses = await ledger(api)
        assert n == RESULTS and statuses == {"completed": RESULTS}
        # billed on our count of each output, whatever the miners reported
        want = sum((Decimal(count_now("mistral-v1", f"answer {j}")) * PRICE / 1000 for j in ids),
                   Decimal(0))
        assert total == want == sum(expected.values())
        r = await api.client.get("/metrics")
        assert Decimal(r.json()["runpod_income_usd"]) == want
        assert r.json()["total_idle_jobs_processed"] == RESULTS
        print(f"\n{RESULTS} idle results by 20 miners on {any_db.split(':')[0]}: {elapsed:.2f} s, "
              f"{RESULTS / elapsed:.0f} jobs/s (lease + signed result); ledger {total} USD")


async def test_idle_ids_lost_from_redis_come_back(api):  # type: ignore[no-untyped-def]
    """The DB is the truth: the reconciler re-pushes queued idle jobs Redis lost."""
    key = await api.api_key("outside-co", "idle")
    miner = await api.miner()
    ids = {(await submit(api, key, f"p{i}"))["job_id"] for i in range(5)}
    await api.ctx.redis.delete(api.ctx.queue.key("idle"))
    assert await next_idle(miner, wait=0) is None
    got = set()
    deadline = time.monotonic() + 15
    while got != ids and time.monotonic() < deadline:
        job = await next_idle(miner, wait=1)
        if job is not None:
            assert (await post_idle_result(miner, job, "ok", tokens=1)).status_code == 200
            got.add(job["job_id"])
    assert got == ids
    assert (await ledger(api))[1] == 5
