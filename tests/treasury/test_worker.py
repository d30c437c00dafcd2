"""The arq side: the threshold cron enqueues run_buyback under a deterministic job id, and a
worker runs it to the burn; enqueueing the same buyback again is a no-op."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

from arq import func
from arq.connections import RedisSettings
from arq.worker import Worker

from app.treasury.dispatch import RUN_BUYBACK, arq_queue_name, buyback_job_id, enqueue_buyback
from jobs import treasury_tasks
from jobs.worker import create_worker
from tests.treasury.conftest import Stopwatch, treasury_app


async def test_cron_enqueues_and_the_worker_burns(treasury_settings, devnet_layout, operator) -> None:
    settings = treasury_settings(buyback_threshold_usd=Decimal("0.5"))
    async with treasury_app(settings, devnet_layout, operator) as t:
        await t.add_revenue("0.25", "0.25")
        ctx = {"app": t.ctx}
        bid = await treasury_tasks.check_buyback_threshold(ctx)
        assert bid is not None
        assert await enqueue_buyback(t.ctx, bid) is False  # same job id: already queued
        pool = t.ctx.extras["arq"]
        queue = arq_queue_name(t.ctx)
        assert await pool.zcard(queue) == 1
        worker = Worker(functions=[func(treasury_tasks.run_buyback, name=RUN_BUYBACK, keep_result=0)],
                        redis_settings=RedisSettings.from_dsn(settings.redis_url),
                        queue_name=queue, ctx=ctx, burst=True, poll_delay=0.05,
                        handle_signals=False)
        clock = Stopwatch()
        try:
            await worker.main()
        finally:
            await worker.close()
        assert worker.jobs_complete == 1 and worker.jobs_failed == 0
        print(f"\nMEASURE worker: enqueue -> burned in {clock.seconds:.3f}s")
        bb = await t.buyback(bid)
        assert bb.status == "burned" and bb.usd_amount == Decimal("0.5")
        # the cron finds nothing to do now, and the job id is free again for a later buyback
        assert await treasury_tasks.check_buyback_threshold(ctx) is None
        assert await pool.exists(f"arq:job:{buyback_job_id(t.ctx, bid)}") == 0


async def test_the_mia_worker_runs_the_loop_on_a_json_rpc_chain(node_url, treasury_settings,
                                                                 devnet_layout, operator) -> None:
    """`mia worker` as make dev runs it, against chain.node over HTTP: revenue crosses the
    threshold, the cron starts a buyback, the worker swaps and burns, /burns shows it."""
    settings = treasury_settings(chain_rpc_url=node_url, buyback_threshold_usd=Decimal("0.05"),
                                 buyback_check_interval_s=1)
    async with treasury_app(settings, devnet_layout, operator) as t:
        await t.add_revenue("0.03", "0.03")
        clock = Stopwatch()
        worker = create_worker(settings, handle_signals=False, poll_delay=0.05)
        task = asyncio.create_task(worker.async_run())
        try:
            for _ in range(300):
                items = (await t.api.client.get("/burns")).json()["items"]
                if items:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await worker.close()
        assert items, "no burn within 30 s"
        print(f"\nMEASURE mia worker: threshold crossed -> burn listed in {clock.seconds:.2f}s")
        assert items[0]["usd_amount"] == "0.060000"
        body = (await t.api.client.get(f"/burns/{items[0]['buyback_id']}/verify")).json()
        assert body["verified"] is True, body
