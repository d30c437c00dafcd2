"""Idle jobs: clients submit and read them; miners lease them like chat jobs (app/leasing.py).

The completing transaction (miner result here, RunPod in app/idle/runpod_flow.py) does the
conditional UPDATE of the job and, only if it won, inserts the job's one RevenueEvent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import leasing
from app.auth.principals import Client, Wallet
from app.context import AppContext
from app.errors import Conflict, NotFound
from app.idle import revenue
from app.idle.schemas import IdleAssignment, IdleResultOut, LeaseOut, ReleaseOut
from app.miners import flow
from app.models import ApiKey, IdleJob, JobStatus, utcnow

log = logging.getLogger(__name__)
TERMINAL = (JobStatus.completed, JobStatus.failed)
MAX_DB_ID = 2**31 - 1


def parse_job_id(job_id: str) -> int | None:
    """Idle job ids are positive ints; in URLs and the queue they travel as decimal text, in
    one spelling only (no leading zeros): results are signed over that text."""
    if not job_id.isascii() or not job_id.isdigit() or len(job_id) > 10 or job_id[0] == "0":
        return None
    value = int(job_id)
    return value if value <= MAX_DB_ID else None


IDLE = flow.JobKind(name="idle", model=IdleJob, parse_id=parse_job_id, output_column="result")


# ------------------------------------------------------------------ clients


async def submit(ctx: AppContext, client: Client, prompt: str, max_tokens: int) -> IdleJob:
    now = utcnow()
    async with ctx.db.transaction() as session:
        prefix = (await session.execute(
            select(ApiKey.prefix).where(ApiKey.id == client.api_key_id))).scalar()
        job = IdleJob(prompt=prompt, max_tokens=max_tokens, status=JobStatus.queued,
                      business_id=client.business_id, api_key_id=client.api_key_id,
                      submitted_by=prefix, attempts=0, runpod_attempts=0, created_at=now)
        session.add(job)
        await session.flush()
    try:
        await ctx.queue.push("idle", str(job.id))
    except RedisError:
        # Unlike chat nobody waits on this synchronously: the reconciler pushes it once Redis is
        # back, and the worker sends it to RunPod after IDLE_TO_RUNPOD_AFTER_S either way.
        log.warning("idle job %d queued in the DB only: Redis is unavailable", job.id)
    return job


def estimated_cost(ctx: AppContext, max_tokens: int) -> Decimal:
    return revenue.revenue_for(max_tokens, ctx.settings.price_per_1k_tokens_usd)


async def get_owned(ctx: AppContext, client: Client, job_id: str) -> IdleJob:
    key = parse_job_id(job_id)
    async with ctx.db.sessions() as session:
        job = await session.get(IdleJob, key) if key is not None else None
    if job is None or job.business_id != client.business_id:
        raise NotFound("no such idle job", code="job_not_found")
    return job


async def wait_for(ctx: AppContext, client: Client, job: IdleJob, wait_s: float) -> IdleJob:
    return await ctx.notifier.wait_for(str(job.id), wait_s, job,
                                       lambda: get_owned(ctx, client, str(job.id)),
                                       lambda j: j.status in TERMINAL)


# ------------------------------------------------------------------ miners


async def next_idle_job(ctx: AppContext, who: Wallet, wait_s: float,
                        gone: Callable[[], Awaitable[bool]] | None = None) -> IdleAssignment | None:
    """Lease the next idle job, but only while no chat job is waiting: chat comes first."""

    async def chat_waiting() -> bool:
        return await ctx.queue.depth("chat") > 0

    async def describe(session: AsyncSession, key: int, lease: leasing.Lease) -> IdleAssignment:
        prompt, max_tokens = (await session.execute(
            select(IdleJob.prompt, IdleJob.max_tokens).where(IdleJob.id == key))).one()
        return IdleAssignment(job_id=str(key), lease_id=lease.lease_id,
                              lease_expires_at=lease.expires_at, prompt=prompt,
                              max_tokens=max_tokens, attempt=lease.attempt)

    return await flow.leased(ctx, IDLE, who, wait_s, describe, gone=gone,  # type: ignore[no-any-return]
                             yield_to=chat_waiting)


async def submit_result(ctx: AppContext, who: Wallet, job_id: str, lease_id: str, output: str,
                        output_tokens: int | None, signature: str) -> IdleResultOut:
    miner_id = flow.miner_id_of(who)
    key = parse_job_id(job_id)
    if key is None:
        raise NotFound("no such idle job", code="job_not_found")
    signature = await flow.check_result_signature(ctx, who, job_id, output, signature)
    now = utcnow()
    price = ctx.settings.price_per_1k_tokens_usd
    async with ctx.db.transaction() as session:
        max_tokens = (await session.execute(
            select(IdleJob.max_tokens).where(IdleJob.id == key))).scalar()
        if max_tokens is None:
            raise NotFound("no such idle job", code="job_not_found")
        # Billed: the reported count (the output's words when none was reported), capped at
        # the job's max_tokens, so a miner cannot inflate what the client pays.
        tokens = min(output_tokens if output_tokens is not None else len(output.split()),
                     max_tokens)
        earned = revenue.revenue_for(tokens, price)
        won = await leasing.complete(session, IdleJob, key, lease_id, miner_id, now,
                                     result=output, output_tokens=tokens, usd_earned=earned,
                                     signature=signature, processed_by="miner")
        if won:
            await revenue.record(session, idle_job_id=key, amount_usd=earned, source="miner",
                                 output_tokens=tokens, now=now)
            await flow.credit_miner(session, miner_id, tokens, now)
    if won:
        await flow.announce(ctx, job_id)
        return IdleResultOut(job_id=job_id, status="completed", output_tokens=tokens,
                             usd_earned=earned, completed_at=now)
    job = await IDLE.get(ctx, job_id)
    if job.processed_by == "runpod":  # RunPod finished it: this miner's lease is history
        raise Conflict(flow.NOT_CURRENT, code="lease_not_current")
    flow.is_repeat(IDLE, job, lease_id, miner_id, output, now)
    return IdleResultOut(job_id=job_id, status="completed", output_tokens=job.output_tokens or 0,
                         usd_earned=job.usd_earned or Decimal(0), completed_at=job.completed_at)


async def extend_lease(ctx: AppContext, who: Wallet, job_id: str, lease_id: str,
                       seconds: int | None) -> LeaseOut:
    return await flow.extend(ctx, IDLE, who, job_id, lease_id, seconds)


async def release_lease(ctx: AppContext, who: Wallet, job_id: str, lease_id: str,
                        reason: str) -> ReleaseOut:
    return await flow.release(ctx, IDLE, who, job_id, lease_id, reason)
