"""Idle jobs are paid for: a hold at submission (402 when the balance does not cover it, nothing
queued), the server's count charged at completion and the rest released, everything released
when the job fails; revenue is the charge. Numbers to the micro-dollar, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import func, select, update

from app.models import ApiKey, IdleJob, LedgerEntry, RevenueEvent
from tests.accounts.ledger_support import (balance, business_of, check_invariants, count_entries,
                                    entries)
from tests.idle.support import (PRICE, auth, events_for, get_job, next_idle, post_idle_result,
                                running_worker, runpod_settings)
from tests.support.harness import running_app, until

HOLD_100 = Decimal("0.000200")  # 100 tokens x 0.002 USD / 1000


async def _submit(api, key, max_tokens=100, prompt="hello idle world"):  # type: ignore[no-untyped-def]
    return await api.client.post("/idle-job", json={"prompt": prompt, "max_tokens": max_tokens},
                                 headers=auth(key))


async def test_completion_charges_our_count_and_releases_the_rest(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("outside-co", "idle", funds=Decimal("1"))
        business = await business_of(api, key)
        miner = await api.miner()
        r = await _submit(api, key)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert Decimal(r.json()["estimated_cost_usd"]) == HOLD_100
        assert await balance(api, business) == Decimal("0.999800")
        async with api.ctx.db.sessions() as s:
            assert (await s.get(IdleJob, int(job_id))).hold_usd == HOLD_100

        job = await next_idle(miner, wait=2)
        # 9 tokens to the server's tokenizer; the miner's 37 plays no part
        r = await post_idle_result(miner, job, "It began in 1789.", tokens=37)
        assert r.status_code == 200, r.text
        assert Decimal(r.json()["usd_earned"]) == Decimal("0.000018")
        assert await entries(api, "idle", job_id) == {
            "hold": (-HOLD_100, 100), "release": (HOLD_100, None),
            "charge": (Decimal("-0.000018"), 9)}
        assert await balance(api, business) == Decimal("0.999982")
        seen = await get_job(api, key, job_id)
        assert Decimal(seen["usd_earned"]) == Decimal("0.000018")
        [event] = await events_for(api, job_id)
        assert (event.source, event.amount_usd, event.output_tokens) == (
            "miner", Decimal("0.000018"), 9)

        # completing twice charges once
        again = await post_idle_result(miner, job, "It began in 1789.", tokens=37)
        assert again.status_code == 200 and again.json() == r.json()
        assert len(await entries(api, "idle", job_id)) == 3
        assert await balance(api, business) == Decimal("0.999982")
        await check_invariants(api)


async def test_a_balance_short_of_the_hold_is_402_and_nothing_is_queued(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("outside-co", "idle", funds=Decimal("0.000199"))
        r = await _submit(api, key)
        assert r.status_code == 402, r.text
        assert r.json()["error"] == "insufficient_balance"
        assert (r.json()["balance_usd"], r.json()["required_usd"]) == ("0.000199", "0.000200")
        assert await api.ctx.queue.depth("idle") == 0
        async with api.ctx.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(IdleJob))).scalar_one() == 0
        assert await count_entries(api) == 1  # the top-up only
        # the same key with a smaller job fits
        r = await _submit(api, key, max_tokens=99)
        assert r.status_code == 202, r.text
        assert await balance(api, await business_of(api, key)) == Decimal("0.000001")
        await check_invariants(api)


async def test_a_job_that_fails_releases_its_whole_hold(any_db, settings_factory):  # type: ignore[no-untyped-def]
    """Given back on its last delivery (a miner's release), and lapsed on its last delivery
    (the reaper): both fail the job, and the business pays nothing."""
    settings = settings_factory(any_db, max_attempts=1, lease_seconds=1)
    async with running_app(settings) as api:
        key = await api.api_key("outside-co", "idle", funds=Decimal("1"))
        business = await business_of(api, key)
        miner = await api.miner()
        given_back = (await _submit(api, key)).json()["job_id"]
        job = await next_idle(miner, wait=2)
        r = await miner.client.post(f"/idle-job/{given_back}/release",
                                    json={"lease_id": job["lease_id"], "reason": "out of memory"},
                                    headers=miner.auth)
        assert r.status_code == 200 and r.json()["status"] == "failed", r.text
        assert await entries(api, "idle", given_back) == {
            "hold": (-HOLD_100, 100), "release": (HOLD_100, None)}
        assert await balance(api, business) == Decimal("1.000000")

        lapsed = (await _submit(api, key)).json()["job_id"]
        assert (await next_idle(miner, wait=2))["job_id"] == lapsed

        async def failed() -> bool:
            return (await get_job(api, key, lapsed))["status"] == "failed"
        await until(failed, 10)  # the in-process reaper
        assert await entries(api, "idle", lapsed) == {
            "hold": (-HOLD_100, 100), "release": (HOLD_100, None)}
        assert await balance(api, business) == Decimal("1.000000")
        assert await events_for(api, given_back) == [] and await events_for(api, lapsed) == []
        await check_invariants(api)


async def test_the_monthly_key_limit(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("outside-co", "idle", funds=Decimal("1"))
        other = await api.api_key("outside-co", "idle", funds=Decimal(0))
        async with api.ctx.db.transaction() as s:
            await s.execute(update(ApiKey).where(ApiKey.prefix == key[:10])
                            .values(monthly_limit_usd=Decimal("0.000500")))
        miner = await api.miner()
        first = (await _submit(api, key)).json()["job_id"]
        assert (await _submit(api, key)).status_code == 202  # 0.0004 held of 0.0005
        r = await _submit(api, key)
        assert r.status_code == 402, r.text
        body = r.json()
        assert body["error"] == "key_limit_reached"
        assert (body["limit_usd"], body["spent_usd"], body["required_usd"]) == (
            "0.000500", "0.000400", "0.000200")
        assert await api.ctx.queue.depth("idle") == 2
        # another key of the business is not limited by it
        assert (await _submit(api, other)).status_code == 202
        # a completed job counts what it was charged (0.000018), not its hold
        job = await next_idle(miner, wait=2)
        assert job["job_id"] == first
        r = await post_idle_result(miner, job, "It began in 1789.")
        assert r.status_code == 200, r.text
        assert (await _submit(api, key)).status_code == 202  # 0.000018 + 0.0002 + 0.0002
        r = await _submit(api, key, max_tokens=42)  # + 0.000084: 0.000502
        assert r.status_code == 402 and r.json()["spent_usd"] == "0.000418", r.text
        assert (await _submit(api, key, max_tokens=41)).status_code == 202  # 0.000500 exactly
        await check_invariants(api)


async def test_a_hundred_concurrent_submissions_against_fifty_holds(any_db, settings_factory):  # type: ignore[no-untyped-def]
    """Real concurrency through the app (one event loop, the database's own locking): exactly
    the 50 the balance covers are accepted; the others get 402 with the amounts, and nothing of
    theirs is queued or written."""
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("outside-co", "idle", funds=50 * HOLD_100)
        business = await business_of(api, key)
        answers = await asyncio.gather(*[_submit(api, key, prompt=f"job {i}")
                                         for i in range(100)])
        codes = sorted(r.status_code for r in answers)
        assert codes == [202] * 50 + [402] * 50, codes
        refused = [r.json() for r in answers if r.status_code == 402]
        assert {(b["error"], b["balance_usd"], b["required_usd"]) for b in refused} == {
            ("insufficient_balance", "0.000000", "0.000200")}
        accepted = {r.json()["job_id"] for r in answers if r.status_code == 202}
        assert await balance(api, business) == Decimal(0)
        assert await api.ctx.queue.depth("idle") == 50
        async with api.ctx.db.sessions() as s:
            rows = set((await s.execute(select(IdleJob.id))).scalars())
            holds = set((await s.execute(select(LedgerEntry.job_id).where(
                LedgerEntry.kind == "hold"))).scalars())
        assert {str(i) for i in rows} == accepted == holds
        await check_invariants(api)


async def test_runpod_charges_our_count_and_a_failure_releases(any_db, settings_factory,  # type: ignore[no-untyped-def]
                                                               runpod_standin):
    settings = settings_factory(any_db, **runpod_settings(runpod_standin, runpod_max_tries=1))
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle", funds=Decimal("1"))
        business = await business_of(api, key)
        done = (await _submit(api, key, max_tokens=50, prompt="one two three")).json()["job_id"]

        async def finished(job_id: str) -> dict:  # type: ignore[type-arg]
            body: dict = {}

            async def check() -> bool:
                nonlocal body
                body = await get_job(api, key, job_id, wait=1)
                return body["status"] in ("completed", "failed")
            await until(check, 20)
            return body

        body = await finished(done)
        assert body["status"] == "completed" and body["processed_by"] == "runpod", body
        tokens = body["output_tokens"]
        assert 0 < tokens < 50
        charge = Decimal(tokens) * PRICE / 1000
        assert Decimal(body["usd_earned"]) == charge
        assert await entries(api, "idle", done) == {
            "hold": (Decimal("-0.000100"), 50), "release": (Decimal("0.000100"), None),
            "charge": (-charge, tokens)}
        [event] = await events_for(api, done)
        assert (event.source, event.amount_usd) == ("runpod", charge)

        runpod_standin.set_mode(fail=True)
        failed = (await _submit(api, key, max_tokens=50)).json()["job_id"]
        body = await finished(failed)
        assert body["status"] == "failed", body
        assert await entries(api, "idle", failed) == {
            "hold": (Decimal("-0.000100"), 50), "release": (Decimal("0.000100"), None)}
        assert await balance(api, business) == Decimal(1) - charge
        await check_invariants(api)


async def test_a_job_without_a_hold_earns_nothing(any_db, settings_factory):  # type: ignore[no-untyped-def]
    """A job written before the ledger (no hold): completing it charges nobody and books no
    revenue; so does one submitted while idle jobs were free (price 0: no hold)."""
    async with running_app(settings_factory(any_db, price_per_1k_tokens_usd=Decimal(0))) as api:
        key = await api.api_key("outside-co", "idle", funds=Decimal(0))
        miner = await api.miner()
        r = await _submit(api, key)
        assert r.status_code == 202, r.text
        job = await next_idle(miner, wait=2)
        r = await post_idle_result(miner, job, "It began in 1789.")
        assert r.status_code == 200 and Decimal(r.json()["usd_earned"]) == 0
        assert await entries(api, "idle", job["job_id"]) == {}
        async with api.ctx.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(RevenueEvent))
                    ).scalar_one() == 0
        await check_invariants(api)
