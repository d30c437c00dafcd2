"""Worker tasks called directly: deterministic enqueue, the dispatcher's claims, the revenue hook."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update

from app.context import arq_queue_name
from app.idle.dispatch import enqueue_runpod
from app.models import IdleJob, SystemMetrics, utcnow
from jobs import worker
from tests.idle.support import (clear_arq_keys, next_idle, post_idle_result, runpod_settings,
                                submit)
from tests.support.harness import running_app


async def test_double_enqueue_is_harmless(settings_factory):  # type: ignore[no-untyped-def]
    settings = settings_factory()
    async with running_app(settings) as api:
        try:
            assert await enqueue_runpod(api.ctx, [(7, 0)]) == 1
            assert await enqueue_runpod(api.ctx, [(7, 0), (7, 0)]) == 0
            assert await enqueue_runpod(api.ctx, [(7, 1)]) == 1  # the next run is another job
            assert await api.ctx.arq.zcard(arq_queue_name(settings)) == 2
        finally:
            clear_arq_keys(settings)


async def test_dispatcher_and_revenue_hook(any_db, settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    settings = settings_factory(any_db, **runpod_settings(runpod_standin, idle_to_runpod_after_s=60))
    async with running_app(settings) as api:
        ctx = {"app": api.ctx}
        try:
            key = await api.api_key("outside-co", "idle")
            jobs = [await submit(api, key, f"p{i}") for i in range(3)]
            miner = await api.miner()
            leased = await next_idle(miner, wait=1)
            assert leased["job_id"] == jobs[0]["job_id"]
            long_ago = utcnow() - timedelta(seconds=120)
            async with api.ctx.db.transaction() as s:
                await s.execute(update(IdleJob).where(IdleJob.id.in_(
                    [int(jobs[0]["job_id"]), int(jobs[1]["job_id"])])).values(created_at=long_ago))

            assert await worker.dispatch_stale_idle_jobs(ctx) == 1
            assert await worker.dispatch_stale_idle_jobs(ctx) == 0  # claimed once, enqueued once
            async with api.ctx.db.sessions() as s:
                rows = dict((await s.execute(select(IdleJob.id, IdleJob.status))).all())
            assert rows == {int(jobs[0]["job_id"]): "assigned",  # a miner holds it: not taken
                            int(jobs[1]["job_id"]): "processing",  # stale: RunPod's now
                            int(jobs[2]["job_id"]): "queued"}  # fresh: still for miners
            assert await api.ctx.arq.zcard(arq_queue_name(settings)) == 1

            r = await post_idle_result(miner, leased, "done", tokens=50)
            assert r.status_code == 200
            # billed on the server's count ("done" is one Mixtral token), not the reported 50
            assert await worker.check_revenue(ctx) == "0.000002"
            async with api.ctx.db.sessions() as s:
                metrics = dict((await s.execute(
                    select(SystemMetrics.metric_name, SystemMetrics.value))).all())
            assert Decimal(metrics["runpod_income_usd"]) == Decimal("0.000002")
            assert metrics["total_idle_jobs_processed"] == 1
            assert metrics["total_buyback_usd"] == 0
        finally:
            clear_arq_keys(settings)


async def test_shutdown_survives_a_job_task_cancelled_in_arqs_bookkeeping(settings_factory):  # type: ignore[no-untyped-def]
    """SIGTERM cancels every job task; one cancelled outside the function (arq's Redis pipeline
    around a cron run) used to re-raise in arq's close: on_shutdown skipped, exit code 1."""
    import asyncio
    import signal

    from arq.connections import create_pool

    settings = settings_factory()
    closed: list[bool] = []

    async def on_shutdown(ctx: dict[str, object]) -> None:
        closed.append(True)

    # signal handlers on this test's loop only: they go when the loop closes
    arq_worker = worker.create_worker(settings, on_shutdown=on_shutdown, handle_signals=True)
    arq_worker._pool = await create_pool(arq_worker.redis_settings)
    try:
        in_bookkeeping = asyncio.create_task(asyncio.sleep(30))
        arq_worker.tasks["a-cron-run"] = in_bookkeeping
        await asyncio.sleep(0)
        arq_worker.handle_sig(signal.SIGTERM)
        await arq_worker.close()
        assert closed == [True] and in_bookkeeping.cancelled()
    finally:
        clear_arq_keys(settings)
