"""Idle jobs: clients submit and read them; miners lease them like chat jobs (app/leasing.py).

The completing transaction (miner result here, RunPod in app/idle/runpod_flow.py) does the
conditional UPDATE of the job and, only if it won, inserts the job's one RevenueEvent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal

from redis.exceptions import RedisError
from sqlalchemy import select, update

from app import leasing
from app.auth import wallet as wallet_sig
from app.auth.principals import Client, Wallet
from app.context import AppContext
from app.errors import Conflict, NotFound, Unauthorized
from app.idle import revenue
from app.idle.schemas import IdleAssignment, IdleResultOut, LeaseOut, ReleaseOut
from app.miners.service import MIN_BLOCK_S, requeue
from app.models import ApiKey, IdleJob, JobStatus, Miner, utcnow

log = logging.getLogger(__name__)
TERMINAL = (JobStatus.completed, JobStatus.failed)
MAX_DB_ID = 2**31 - 1


def parse_job_id(job_id: str) -> int | None:
    """Idle job ids are positive ints; in URLs and the queue they travel as decimal text."""
    if not job_id.isascii() or not job_id.isdigit() or len(job_id) > 10:
        return None
    value = int(job_id)
    return value if 0 < value <= MAX_DB_ID else None


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
    if wait_s <= 0 or job.status in TERMINAL:
        return job
    latest = job

    async def finished() -> bool:
        nonlocal latest
        latest = await get_owned(ctx, client, str(job.id))
        return latest.status in TERMINAL

    await ctx.notifier.wait_until(str(job.id), wait_s, finished)
    return latest


# ------------------------------------------------------------------ miners


async def next_idle_job(ctx: AppContext, who: Wallet, wait_s: float,
                        gone: Callable[[], Awaitable[bool]] | None = None) -> IdleAssignment | None:
    """Lease the next idle job, but only while no chat job is waiting: chat comes first. If the
    miner hung up while waiting, the id goes back to the front untouched."""
    miner_id = _miner_id(who)
    deadline = time.monotonic() + wait_s
    while True:
        if await ctx.queue.depth("chat") > 0:
            return None
        remaining = deadline - time.monotonic()
        item = await ctx.queue.pop(("idle",), remaining if remaining >= MIN_BLOCK_S else 0)
        if item is None:
            return None
        job_id = parse_job_id(item[1])
        if job_id is None:
            continue
        if gone is not None and await gone():
            await requeue(ctx, "idle", [item[1]])
            return None
        async with ctx.db.transaction() as session:
            now = utcnow()  # after BEGIN: a wait for the SQLite lock must not shorten the lease
            lease = await leasing.acquire(session, IdleJob, job_id, miner_id,
                                          ctx.settings.lease_seconds, now)
            if lease is None:
                continue  # taken, claimed for RunPod, finished or gone: the next one
            prompt, max_tokens = (await session.execute(
                select(IdleJob.prompt, IdleJob.max_tokens).where(IdleJob.id == job_id))).one()
            await session.execute(update(Miner).where(Miner.id == miner_id)
                                  .values(last_active=now))
        return IdleAssignment(job_id=str(job_id), lease_id=lease.lease_id,
                              lease_expires_at=lease.expires_at, prompt=prompt,
                              max_tokens=max_tokens, attempt=lease.attempt)


async def submit_result(ctx: AppContext, who: Wallet, job_id: str, lease_id: str, output: str,
                        output_tokens: int | None, signature: str) -> IdleResultOut:
    miner_id = _miner_id(who)
    key = parse_job_id(job_id)
    if key is None:
        raise NotFound("no such idle job", code="job_not_found")
    signature = "0x" + signature.removeprefix("0x").lower()  # one canonical form is stored
    digest = wallet_sig.result_digest(job_id, output)
    if not await wallet_sig.verify(who.address, digest, signature, ctx.extras.get("erc1271")):
        raise Unauthorized("the result signature does not recover to your wallet; sign "
                           "keccak256(utf8(job_id) || utf8(output)) with personal_sign",
                           code="invalid_result_signature")
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
            await session.execute(
                update(Miner).where(Miner.id == miner_id)
                .values(job_count=Miner.job_count + 1,
                        tokens_generated=Miner.tokens_generated + tokens, last_active=now))
    if won:
        await announce(ctx, key)
        return IdleResultOut(job_id=job_id, status="completed", output_tokens=tokens,
                             usd_earned=earned, completed_at=now)
    return await _explain_lost(ctx, key, lease_id, miner_id, output, now)


async def announce(ctx: AppContext, job_id: int) -> None:
    try:
        await ctx.queue.publish_done(str(job_id))
    except Exception:  # waiters re-check the DB on a timer; the result is already committed
        pass


async def _explain_lost(ctx: AppContext, job_id: int, lease_id: str, miner_id: int, output: str,
                        now: datetime) -> IdleResultOut:
    """Not completed by this call: the same result again (idempotent 200), or why not (409)."""
    async with ctx.db.sessions() as session:
        job = await session.get(IdleJob, job_id)
    if job is None:
        raise NotFound("no such idle job", code="job_not_found")
    if job.lease_id == lease_id and job.miner_id == miner_id and job.processed_by != "runpod":
        if job.status == JobStatus.completed and job.result == output:
            return IdleResultOut(job_id=str(job.id), status="completed",
                                 output_tokens=job.output_tokens or 0,
                                 usd_earned=job.usd_earned or 0, completed_at=job.completed_at)
        if job.status == JobStatus.completed:
            raise Conflict("this job was already completed with a different output",
                           code="already_completed")
        if job.status == JobStatus.failed:
            raise Conflict(f"this job has failed: {job.failure_reason}", code="job_failed")
        if job.status == JobStatus.assigned and job.lease_expires_at and job.lease_expires_at <= now:
            raise Conflict("your lease has expired", code="lease_expired")
    raise Conflict("this lease is not current (expired, reassigned or not yours)",
                   code="lease_not_current")


async def extend_lease(ctx: AppContext, who: Wallet, job_id: str, lease_id: str,
                       seconds: int | None) -> LeaseOut:
    s = ctx.settings
    key = await _require_job(ctx, job_id)
    length = min(seconds or s.lease_seconds, s.lease_max_extend_s)
    async with ctx.db.transaction() as session:
        expires = await leasing.extend(session, IdleJob, key, lease_id, _miner_id(who),
                                       utcnow(), length)
    if expires is None:
        raise Conflict("this lease is not current (expired, reassigned or not yours)",
                       code="lease_not_current")
    return LeaseOut(job_id=job_id, lease_id=lease_id, lease_expires_at=expires)


async def release_lease(ctx: AppContext, who: Wallet, job_id: str, lease_id: str,
                        reason: str) -> ReleaseOut:
    key = await _require_job(ctx, job_id)
    async with ctx.db.transaction() as session:
        status = await leasing.release(session, IdleJob, key, lease_id, _miner_id(who),
                                       utcnow(), ctx.settings.max_attempts, reason)
    if status is None:
        raise Conflict("this lease is not current (expired, reassigned or not yours)",
                       code="lease_not_current")
    if status == JobStatus.queued:
        await requeue(ctx, "idle", [job_id])
    else:
        await announce(ctx, key)
    return ReleaseOut(job_id=job_id, status=status)


async def _require_job(ctx: AppContext, job_id: str) -> int:
    key = parse_job_id(job_id)
    async with ctx.db.sessions() as session:
        if key is None or await session.get(IdleJob, key) is None:
            raise NotFound("no such idle job", code="job_not_found")
    return key


def _miner_id(who: Wallet) -> int:
    if who.miner_id is None:
        raise Unauthorized("this session is not a registered miner's; POST /register_miner",
                           code="not_a_miner")
    return who.miner_id
