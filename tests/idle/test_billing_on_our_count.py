"""Idle jobs bill the server's count of the output's tokens, never the miner's report."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from app.models import IdleJob, Miner, RevenueEvent
from tests.idle.support import PRICE, get_job, next_idle, post_idle_result, submit
from tests.support.harness import running_app


async def test_x_reported_as_4096_tokens_bills_one(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("outside-co", "idle")
        miner = await api.miner()
        created = await submit(api, key, max_tokens=4096)
        job = await next_idle(miner, wait=2)
        r = await post_idle_result(miner, job, "x", tokens=4096)
        assert r.status_code == 200, r.text
        assert r.json()["output_tokens"] == 1  # not the maximum the miner claimed
        assert Decimal(r.json()["usd_earned"]) == PRICE / 1000
        seen = await get_job(api, key, created["job_id"])
        assert seen["output_tokens"] == 1 and Decimal(seen["usd_earned"]) == PRICE / 1000
        async with api.ctx.db.sessions() as s:
            row = await s.get(IdleJob, int(created["job_id"]))
            event = (await s.execute(select(RevenueEvent))).scalar_one()
            m = (await s.execute(select(Miner).where(Miner.address == miner.address))).scalar_one()
        assert (row.output_tokens, row.reported_tokens) == (1, 4096)  # the report is kept
        assert (event.output_tokens, event.amount_usd) == (1, PRICE / 1000)
        assert m.tokens_generated == 1


async def test_batched_results_bill_our_count_too(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("outside-co", "idle")
        miner = await api.miner()
        for _ in range(2):
            await submit(api, key, max_tokens=4096)
        r = await miner.client.get("/idle-job/batch", params={"max": 2}, headers=miner.auth)
        jobs = r.json()["jobs"]
        items = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "output": out,
                  "output_tokens": 4096, "signature": miner.sign_result(j["job_id"], out)}
                 for j, out in zip(jobs, ("x", "It began in 1789."), strict=True)]
        r = await miner.client.post("/idle-job/results", json={"results": items},
                                    headers=miner.auth)
        assert [o["status"] for o in r.json()["results"]] == ["completed"] * 2
        async with api.ctx.db.sessions() as s:
            billed = dict((await s.execute(select(IdleJob.result, IdleJob.output_tokens))).all())
            credited = (await s.execute(select(Miner.tokens_generated)
                                        .where(Miner.address == miner.address))).scalar_one()
        assert billed == {"x": 1, "It began in 1789.": 9} and credited == 10


async def test_the_bill_stays_capped_at_max_tokens(api):  # type: ignore[no-untyped-def]
    key = await api.api_key("outside-co", "idle")
    miner = await api.miner()
    await submit(api, key, max_tokens=3)
    job = await next_idle(miner, wait=2)
    r = await post_idle_result(miner, job, "It began in 1789.", tokens=1)  # 9 tokens, under-reported
    assert r.status_code == 200 and r.json()["output_tokens"] == 3
    assert Decimal(r.json()["usd_earned"]) == 3 * PRICE / 1000


async def test_the_words_tokenizer_counts_words(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(tokenizer="words")) as api:
        key = await api.api_key("outside-co", "idle")
        miner = await api.miner()
        await submit(api, key, max_tokens=100)
        job = await next_idle(miner, wait=2)
        r = await post_idle_result(miner, job, "It began in 1789.", tokens=50)
        assert r.status_code == 200 and r.json()["output_tokens"] == 4
