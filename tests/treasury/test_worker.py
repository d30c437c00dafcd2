"""The arq side: the threshold cron enqueues run_buyback under a deterministic job id, and a
worker runs it to the burn; enqueueing the same buyback again is a no-op."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from decimal import Decimal

import pytest
from arq import Retry, func
from arq.connections import RedisSettings
from arq.worker import Worker

from app.context import arq_queue_name
from app.treasury.dispatch import RUN_BUYBACK, buyback_job_id, enqueue_buyback
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
        pool = t.ctx.arq
        queue = arq_queue_name(t.ctx.settings)
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


async def test_the_mia_worker_runs_the_loop_on_a_json_rpc_chain(chain_node_url, treasury_settings,
                                                                 devnet_layout, operator) -> None:
    """`mia worker` as make dev runs it, against chain.node over HTTP: revenue crosses the
    threshold, the cron starts a buyback, the worker swaps and burns, /burns shows it."""
    settings = treasury_settings(chain_rpc_url=chain_node_url, buyback_threshold_usd=Decimal("0.05"),
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


async def test_a_second_runner_waits_for_the_first(tapp) -> None:  # type: ignore[no-untyped-def]
    """The treasury is one account: while one worker holds the runner lock, another's
    run_buyback is deferred (arq Retry) and sends nothing."""
    t = tapp
    await t.add_revenue("100")
    ctx = {"app": t.ctx}
    bid = await treasury_tasks.check_buyback_threshold(ctx)
    async with treasury_tasks.runner_lock(t.ctx) as held:
        assert held
        with pytest.raises(Retry):
            await treasury_tasks.run_buyback({"app": t.ctx, "job_try": 1}, bid)
        assert (await t.buyback(bid)).status == "planned"
    assert await treasury_tasks.run_buyback({"app": t.ctx, "job_try": 1}, bid) == "burned"
    async with treasury_tasks.runner_lock(t.ctx) as held:
        assert held  # released after the run


async def test_transient_chain_trouble_is_retried_and_resumes(treasury_settings, devnet_layout,
                                                              operator) -> None:
    """Gas above MAX_FEE_GWEI: nothing is signed, the job asks arq to retry with backoff, the
    buyback stays active; once fees fit, the next try finishes it."""
    settings = treasury_settings(max_fee_gwei=Decimal("0.000000001"))  # a 1 wei cap
    async with treasury_app(settings, devnet_layout, operator) as t:
        await t.add_revenue("100")
        ctx = {"app": t.ctx, "job_try": 3}
        bid = await treasury_tasks.check_buyback_threshold(ctx)
        with pytest.raises(Retry) as info:
            await treasury_tasks.run_buyback(ctx, bid)
        assert info.value.defer_score == 8000  # 2 s * 2**(3-1)
        bb = await t.buyback(bid)
        assert bb.status == "swapping" and bb.active_slot == 1 and await t.txs(bid) == []
        treasury = t.ctx.treasury
        treasury.config = dataclasses.replace(treasury.config, max_fee_gwei=Decimal(1000))
        assert await treasury_tasks.run_buyback(ctx, bid) == "burned"
