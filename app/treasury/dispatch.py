"""Handing buybacks to the arq worker: by function name, after commit, with deterministic ids.

The app never imports `jobs`. The queue is the worker's ({REDIS_PREFIX}:arq:queue, as for idle
jobs); the arq job id is {REDIS_PREFIX}:buyback:{id}, so enqueueing one buyback twice is a no-op
(the prefix keeps deployments and test runs that share a Redis apart).
"""

from __future__ import annotations

from arq.connections import ArqRedis

from app.context import AppContext

RUN_BUYBACK = "run_buyback"


def arq_queue_name(ctx: AppContext) -> str:
    return f"{ctx.settings.redis_prefix}:arq:queue"


def buyback_job_id(ctx: AppContext, buyback_id: int) -> str:
    return f"{ctx.settings.redis_prefix}:buyback:{buyback_id}"


def _pool(ctx: AppContext) -> ArqRedis:
    pool = ctx.extras.get("arq")
    if pool is None:  # shares the app's Redis connections
        pool = ArqRedis(ctx.redis.connection_pool, default_queue_name=arq_queue_name(ctx))
        ctx.extras["arq"] = pool
    return pool  # type: ignore[no-any-return]


async def enqueue_buyback(ctx: AppContext, buyback_id: int) -> bool:
    """Enqueue run_buyback(buyback_id). Call only after the claim committed. True if new."""
    job = await _pool(ctx).enqueue_job(RUN_BUYBACK, buyback_id,
                                       _job_id=buyback_job_id(ctx, buyback_id),
                                       _queue_name=arq_queue_name(ctx))
    return job is not None
