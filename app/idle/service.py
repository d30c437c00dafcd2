"""Idle jobs from the client's side: submit, read, wait. Miners lease them (app/idle/kind.py);
RunPod runs the ones no miner took (app/idle/runpod_flow.py). Either completing transaction does
the conditional UPDATE of the job and, only if it won, charges its hold and books that charge as
its one RevenueEvent (app/accounts/billing.py).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import observability
from app.accounts import billing
from app.auth.principals import Client
from app.context import AppContext
from app.db import after_commit
from app.errors import NotFound
from app.idle import kind, revenue
from app.models import ApiKey, IdleJob, JobStatus, utcnow

TERMINAL = (JobStatus.completed, JobStatus.failed)


async def submit(session: AsyncSession, ctx: AppContext, client: Client, prompt: str,
                 max_tokens: int) -> IdleJob:
    """Write the job and its hold in the caller's transaction; its id is pushed to the queue
    after commit.
    Unlike chat nobody waits on it synchronously: if Redis is down the reconciler pushes it once
    Redis is back, and the worker sends it to RunPod after IDLE_TO_RUNPOD_AFTER_S either way."""
    prefix = (await session.execute(
        select(ApiKey.prefix).where(ApiKey.id == client.api_key_id))).scalar()
    job = IdleJob(prompt=prompt, max_tokens=max_tokens, status=JobStatus.queued,
                  business_id=client.business_id, api_key_id=client.api_key_id,
                  submitted_by=prefix, attempts=0, runpod_attempts=0, created_at=utcnow())
    session.add(job)
    await session.flush()
    job_id = str(job.id)
    # the most it may cost, held on the business's balance before anything is queued (402 and
    # a rollback when the balance or the key's monthly limit does not cover it)
    job.hold_usd = await billing.hold_for(session, ctx.settings, client, billing.IDLE, job_id,
                                          max_tokens)
    observability.set_fields(job_id=job_id)  # the rest of the request's log lines name it
    after_commit(session, lambda: ctx.queue.push("idle", job_id),
                 what=f"queueing idle job {job_id} (in the DB only until the reconciler runs)")
    after_commit(session, lambda: observability.remember_origin(  # for the worker's log lines
        ctx.redis, ctx.settings.redis_prefix, "idle", job_id), what="its request id")
    return job


def estimated_cost(ctx: AppContext, max_tokens: int) -> Decimal:
    return revenue.revenue_for(max_tokens, ctx.settings.price_per_1k_tokens_usd)


async def get_owned(ctx: AppContext, client: Client, job_id: str) -> IdleJob:
    key = kind.parse_job_id(job_id)
    async with ctx.db.sessions() as session:
        job = await session.get(IdleJob, key) if key is not None else None
    if job is None or job.business_id != client.business_id:
        raise NotFound("no such idle job", code="job_not_found")
    return job


async def wait_for(ctx: AppContext, client: Client, job: IdleJob, wait_s: float) -> IdleJob:
    return await ctx.notifier.wait_for(str(job.id), wait_s, job,
                                       lambda: get_owned(ctx, client, str(job.id)),
                                       lambda j: j.status in TERMINAL)
