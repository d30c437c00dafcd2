"""Handing buybacks to the arq worker: by function name, after commit, with deterministic ids.

The app never imports `jobs`. The queue is the worker's ({REDIS_PREFIX}:arq:queue, as for idle
jobs); the arq job id is {REDIS_PREFIX}:buyback:{id}, so enqueueing one buyback twice is a no-op
(the prefix keeps deployments and test runs that share a Redis apart).
"""

from __future__ import annotations

from app.context import AppContext, arq_queue_name

RUN_BUYBACK = "run_buyback"


def buyback_job_id(ctx: AppContext, buyback_id: int) -> str:
    return f"{ctx.settings.redis_prefix}:buyback:{buyback_id}"


async def enqueue_buyback(ctx: AppContext, buyback_id: int) -> bool:
    """Enqueue run_buyback(buyback_id). Call only after the claim committed. True if new."""
    job = await ctx.arq.enqueue_job(RUN_BUYBACK, buyback_id,
                                    _job_id=buyback_job_id(ctx, buyback_id),
                                    _queue_name=arq_queue_name(ctx.settings))
    return job is not None
