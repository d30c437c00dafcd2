"""GET /network: the network now, counted from the same sources as /metrics."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from app.models import IdleJob, utcnow
from tests.idle.support import next_idle, post_idle_result, submit
from tests.support.harness import running_app


async def test_network_counts_miners_rates_and_queues(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        empty = (await api.client.get("/network")).json()
        trust = empty.pop("trust")  # the checks of answers (tests/trust cover them)
        assert trust["checks_last_hour"] == 0 and trust["miners_suspended"] == 0
        assert empty == {"active_miners": 0, "jobs_per_minute": {"chat": 0.0, "idle": 0.0},
                         "completed_in_window": {"chat": 0, "idle": 0}, "window_s": 300,
                         "queue_depth": {"chat": 0, "idle": 0},
                         "ledger": {"revenue_usd": "0.000000", "unallocated_usd": "0.000000",
                                    "bought_usd": "0.000000", "serv_burned": "0",
                                    "active_buyback_id": None}}

        idle_key, chat_key = await api.api_key("outside-co", "idle"), await api.api_key("shop")
        miner = await api.miner()
        for i in range(4):
            await submit(api, idle_key, f"p{i}", max_tokens=10)
        for _ in range(3):
            job = await next_idle(miner, wait=1)
            assert (await post_idle_result(miner, job, "out", tokens=5)).status_code == 200
        assert (await api.chat(chat_key, "hi")).status_code == 202
        chat = await miner.next_job(wait=1)
        assert chat is not None
        assert (await miner.post_result(chat, "hello")).status_code == 200
        await api.chat(chat_key, "waiting")
        await submit(api, idle_key, "fails", max_tokens=10)
        # Not counted in the rates: an idle job completed before the window, one that failed in it.
        async with api.ctx.db.transaction() as session:
            await session.execute(update(IdleJob).where(IdleJob.id == int(job["job_id"]))
                                  .values(completed_at=utcnow() - timedelta(minutes=6)))
            await session.execute(update(IdleJob).where(IdleJob.prompt == "fails")
                                  .values(status="failed", completed_at=utcnow()))

        r = await api.client.get("/network")
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=10"
        body = r.json()
        assert body["active_miners"] == 1
        assert body["completed_in_window"] == {"chat": 1, "idle": 2}
        assert body["jobs_per_minute"] == {"chat": 0.2, "idle": 0.4}
        assert body["queue_depth"] == {"chat": 1, "idle": 2}
        metrics = (await api.client.get("/metrics")).json()
        assert body["queue_depth"] == metrics["queue_depth"]
        assert body["active_miners"] == metrics["active_miners"]
        ledger = body["ledger"]  # the public part of /metrics, the same figures
        assert ledger["revenue_usd"] == metrics["runpod_income_usd"] != "0.000000"
        assert ledger["unallocated_usd"] == metrics["unallocated_revenue_usd"]
        assert ledger["serv_burned"] == metrics["total_serv_burned"]
