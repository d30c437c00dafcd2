"""Handing idle jobs to the arq worker: by function name, after commit, with deterministic ids.

The app never imports `jobs`; it enqueues `process_idle_job` by name on the worker's queue.
"""

from __future__ import annotations

from app.config import Settings
from app.context import AppContext, arq_queue_name

PROCESS_IDLE_JOB = "process_idle_job"


def process_job_id(settings: Settings, idle_job_id: int, run: int) -> str:
    """One arq job per (idle job, worker run number): enqueueing it twice is a no-op."""
    return f"{settings.redis_prefix}:idle:{idle_job_id}:{run}"


async def enqueue_runpod(ctx: AppContext, jobs: list[tuple[int, int]]) -> int:
    """Enqueue process_idle_job for each (idle job id, runs so far). Returns how many were new."""
    new = 0
    for job_id, runs in jobs:
        job = await ctx.arq.enqueue_job(PROCESS_IDLE_JOB, job_id,
                                        _job_id=process_job_id(ctx.settings, job_id, runs),
                                        _queue_name=arq_queue_name(ctx.settings))
        new += job is not None
    return new
