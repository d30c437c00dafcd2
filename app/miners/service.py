"""The miner's side of chat jobs: registration, leases, signed results, bookkeeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import leasing
from app.auth import wallet as wallet_sig
from app.auth.principals import Wallet
from app.context import AppContext
from app.errors import Conflict, NotFound, Unauthorized
from app.miners.schemas import ChatAssignment, HistoryItem, LeaseOut, ReleaseOut, ResultOut
from app.models import ChatJob, ChatLog, JobStatus, Miner, utcnow

log = logging.getLogger(__name__)
MIN_BLOCK_S = 0.01  # below this a blocking pop is pointless; take what is there


async def register(ctx: AppContext, address: str, name: str | None) -> Miner:
    for _ in range(2):  # a concurrent first registration of the same address loses the insert
        try:
            async with ctx.db.transaction() as session:
                miner = (await session.execute(
                    select(Miner).where(Miner.address == address))).scalar()
                if miner is None:
                    miner = Miner(name=name or f"miner-{address[2:10].lower()}", address=address,
                                  job_count=0, tokens_generated=0, created_at=utcnow())
                    session.add(miner)
                elif name:
                    miner.name = name
                await session.flush()
                return miner
        except IntegrityError:
            continue
    raise Conflict("concurrent registration of this address; retry", code="register_conflict")


async def find_miner(session: AsyncSession, address: str) -> Miner | None:
    return (await session.execute(select(Miner).where(Miner.address == address))).scalar()


async def next_chat_job(ctx: AppContext, who: Wallet, wait_s: float,
                        gone: Callable[[], Awaitable[bool]] | None = None) -> ChatAssignment | None:
    """Pops job ids (blocking up to wait_s) until one can be leased. If the miner hung up
    while waiting, the id goes back to the front untouched: no lease, no attempt spent."""
    miner_id = _miner_id(who)
    deadline = time.monotonic() + wait_s
    while True:
        remaining = deadline - time.monotonic()
        item = await ctx.queue.pop(("chat",), remaining if remaining >= MIN_BLOCK_S else 0)
        if item is None:
            return None
        _, job_id = item
        if gone is not None and await gone():
            await requeue(ctx, "chat", [job_id])
            return None
        async with ctx.db.transaction() as session:
            now = utcnow()  # after BEGIN: a wait for the SQLite lock must not shorten the lease
            lease = await leasing.acquire(session, ChatJob, job_id, miner_id,
                                          ctx.settings.lease_seconds, now)
            if lease is None:
                continue  # a stale id (already taken, finished or gone): the next one
            job = (await session.execute(select(ChatJob).where(ChatJob.id == job_id))).scalar_one()
            history = await _history(session, job, ctx.settings.chat_history_limit)
            await session.execute(update(Miner).where(Miner.id == miner_id)
                                  .values(last_active=now))
        return ChatAssignment(job_id=job.id, lease_id=lease.lease_id,
                              lease_expires_at=lease.expires_at, prompt=job.prompt,
                              context=job.context, session_id=job.session_id, history=history,
                              attempt=lease.attempt)


async def _history(session: AsyncSession, job: ChatJob, limit: int) -> list[HistoryItem]:
    this_turn = (select(ChatLog.id).where(ChatLog.job_id == job.id, ChatLog.role == "user")
                 .scalar_subquery())
    rows = (await session.execute(
        select(ChatLog.role, ChatLog.message)
        .where(ChatLog.session_id == job.session_id, ChatLog.id < this_turn)
        .order_by(ChatLog.id.desc()).limit(limit))).all()
    return [HistoryItem(role=r.role, content=r.message) for r in reversed(rows)]


async def submit_result(ctx: AppContext, who: Wallet, job_id: str, lease_id: str, output: str,
                        output_tokens: int | None, signature: str) -> ResultOut:
    miner_id = _miner_id(who)
    signature = "0x" + signature.removeprefix("0x").lower()  # one canonical form is stored
    digest = wallet_sig.result_digest(job_id, output)
    if not await wallet_sig.verify(who.address, digest, signature, ctx.extras.get("erc1271")):
        raise Unauthorized("the result signature does not recover to your wallet; sign "
                           "keccak256(utf8(job_id) || utf8(output)) with personal_sign",
                           code="invalid_result_signature")
    now = utcnow()
    async with ctx.db.transaction() as session:
        won = await leasing.complete(session, ChatJob, job_id, lease_id, miner_id, now,
                                     response=output, output_tokens=output_tokens,
                                     signature=signature)
        if won:
            job = (await session.execute(select(ChatJob).where(ChatJob.id == job_id))).scalar_one()
            session.add(ChatLog(session_id=job.session_id, message=output, role="assistant",
                                timestamp=now, business_id=job.business_id, job_id=job.id))
            await session.execute(
                update(Miner).where(Miner.id == miner_id)
                .values(job_count=Miner.job_count + 1,
                        tokens_generated=Miner.tokens_generated + (output_tokens or 0),
                        last_active=now))
    if won:
        await _announce(ctx, job_id)
        return _result_out(job)
    return await _explain_lost(ctx, job_id, lease_id, miner_id, output, now)


async def _announce(ctx: AppContext, job_id: str) -> None:
    try:
        await ctx.queue.publish_done(job_id)
    except Exception:  # waiters re-check the DB on a timer; the result is already committed
        pass


def _result_out(job: ChatJob) -> ResultOut:
    return ResultOut(job_id=job.id, status="completed", session_id=job.session_id,
                     output_tokens=job.output_tokens, completed_at=job.completed_at)


async def _explain_lost(ctx: AppContext, job_id: str, lease_id: str, miner_id: int, output: str,
                        now: datetime) -> ResultOut:
    """Not completed by this call: the same result again (idempotent 200), or why not (409)."""
    async with ctx.db.sessions() as session:
        job = await session.get(ChatJob, job_id) if len(job_id) <= 36 else None
    if job is None:
        raise NotFound("no such job", code="job_not_found")
    if job.lease_id == lease_id and job.miner_id == miner_id:
        if job.status == JobStatus.completed and job.response == output:
            return _result_out(job)
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
    length = min(seconds or s.lease_seconds, s.lease_max_extend_s)
    async with ctx.db.transaction() as session:
        expires = await leasing.extend(session, ChatJob, job_id, lease_id, _miner_id(who),
                                       utcnow(), length)
    if expires is None:
        await _require_job(ctx, job_id)
        raise Conflict("this lease is not current (expired, reassigned or not yours)",
                       code="lease_not_current")
    return LeaseOut(job_id=job_id, lease_id=lease_id, lease_expires_at=expires)


async def release_lease(ctx: AppContext, who: Wallet, job_id: str, lease_id: str,
                        reason: str) -> ReleaseOut:
    async with ctx.db.transaction() as session:
        status = await leasing.release(session, ChatJob, job_id, lease_id, _miner_id(who),
                                       utcnow(), ctx.settings.max_attempts, reason)
    if status is None:
        await _require_job(ctx, job_id)
        raise Conflict("this lease is not current (expired, reassigned or not yours)",
                       code="lease_not_current")
    if status == JobStatus.queued:
        await requeue(ctx, "chat", [job_id])
    else:
        await _announce(ctx, job_id)
    return ReleaseOut(job_id=job_id, status=status)


async def requeue(ctx: AppContext, kind: str, job_ids: list[str]) -> None:
    """Redeliveries go to the front. If Redis is down, the reconciler pushes them later."""
    try:
        await ctx.queue.push_front(kind, *job_ids)
    except Exception as exc:
        log.warning("could not requeue %d %s job(s) (%s); the reconciler will",
                    len(job_ids), kind, type(exc).__name__)


async def _require_job(ctx: AppContext, job_id: str) -> None:
    async with ctx.db.sessions() as session:
        if len(job_id) > 36 or await session.get(ChatJob, job_id) is None:
            raise NotFound("no such job", code="job_not_found")


def _miner_id(who: Wallet) -> int:
    if who.miner_id is None:
        raise Unauthorized("this session is not a registered miner's; POST /register_miner",
                           code="not_a_miner")
    return who.miner_id
