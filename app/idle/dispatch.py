"""Handing idle jobs to the arq worker: by function name, after commit, with deterministic ids.

The app never imports `jobs`; it enqueues `process_idle_job` by name on the worker's queue.
"""

from __future__ import annotations

from arq.connections import ArqRedis

from app.config import Settings
from app.context import AppContext

PROCESS_IDLE_JOB = "process_idle_job"


def arq_queue_name(settings: Settings) -> str:
    return f"{settings.redis_prefix}:arq:queue"


def process_job_id(settings: Settings, idle_job_id: int, run: int) -> str:
    """One arq job per (idle job, worker run number): enqueueing it twice is a no-op."""
    return f"{settings.redis_prefix}:idle:{idle_job_id}:{run}"


def arq_pool(ctx: AppContext) -> ArqRedis:
    pool = ctx.extras.get("arq")
    if pool is None:  # shares the app's Redis connections
        pool = ArqRedis(ctx.redis.connection_pool,
                        default_queue_name=arq_queue_name(ctx.settings))
        ctx.extras["arq"] = pool
    return pool  # type: ignore[no-any-return]


async def enqueue_runpod(ctx: AppContext, jobs: list[tuple[int, int]]) -> int:
    """Enqueue process_idle_job for each (idle job id, runs so far). Returns how many were new."""
    pool = arq_pool(ctx)
    new = 0
    for job_id, runs in jobs:
        job = await pool.enqueue_job(PROCESS_IDLE_JOB, job_id,
                                     _job_id=process_job_id(ctx.settings, job_id, runs),
                                     _queue_name=arq_queue_name(ctx.settings))
        new += job is not None
    return new
