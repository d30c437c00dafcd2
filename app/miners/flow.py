"""The miner's side of any leased job kind (chat, idle): lease, prove, extend, give back.

What differs between kinds (how an id is spelled, what a result writes, what a miner is told)
stays in each kind's service; the lease rules are written once, here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app import leasing
from app.auth import wallet as wallet_sig
from app.auth.principals import Wallet
from app.context import AppContext
from app.errors import Conflict, NotFound, Unauthorized
from app.miners.schemas import LeaseOut, ReleaseOut
from app.models import JobStatus, Miner, utcnow

log = logging.getLogger(__name__)
MIN_BLOCK_S = 0.01  # below this a blocking pop is pointless; take what is there
YIELD_CHECK_S = 0.5  # how often a long-poll that yields to other work looks for it
NOT_CURRENT = "this lease is not current (expired, reassigned or not yours)"


@dataclass(frozen=True)
class JobKind:
    name: str  # the queue's kind: "chat" or "idle"
    model: Any  # an ORM model with the columns app/leasing.py uses
    parse_id: Callable[[str], Any | None]  # URL/queue text -> primary key, None if malformed
    output_column: str  # where a miner's output is stored
    lease_columns: tuple[Any, ...] = ()  # read by the leasing UPDATE itself, into Lease.fields

    async def get(self, ctx: AppContext, job_id: str) -> Any:
        key = self.parse_id(job_id)
        async with ctx.db.reads() as session:
            job = await session.get(self.model, key) if key is not None else None
        if job is None:
            raise NotFound("no such job", code="job_not_found")
        return job


def miner_id_of(who: Wallet) -> int:
    if who.miner_id is None:
        raise Unauthorized("this session is not a registered miner's; POST /register_miner",
                           code="not_a_miner")
    return who.miner_id


async def leased(ctx: AppContext, kind: JobKind, who: Wallet, wait_s: float,
                 describe: Callable[[AsyncSession, Any, leasing.Lease], Awaitable[Any]],
                 gone: Callable[[], Awaitable[bool]] | None = None,
                 yield_to: Callable[[], Awaitable[bool]] | None = None) -> Any | None:
    """Pops ids of `kind` (blocking up to wait_s) until one can be leased, then returns what
    `describe(session, key, lease)` makes of it, in the leasing transaction. None if none came.

    If the miner hung up while waiting, the id goes back to the front untouched: no lease, no
    attempt spent. `yield_to()` true means stop at once (idle work waits while chat is queued).
    """
    miner_id = miner_id_of(who)
    deadline = time.monotonic() + wait_s
    while True:
        if yield_to is not None and await yield_to():
            return None
        remaining = deadline - time.monotonic()
        block = remaining if remaining >= MIN_BLOCK_S else 0
        if yield_to is not None:  # block in slices, so work we yield to is noticed while waiting
            block = min(block, YIELD_CHECK_S)
        item = await ctx.queue.pop((kind.name,), block)
        if item is None:
            if yield_to is not None and block and deadline - time.monotonic() >= MIN_BLOCK_S:
                if gone is not None and await gone():
                    return None
                continue  # a slice ran out, the wait has not
            return None
        key = kind.parse_id(item[1])
        if key is None:
            log.warning("dropped a malformed %s id from the queue: %r", kind.name, item[1][:80])
            continue
        # Checked again after the pop: work of the other kind may have arrived while we were
        # blocked, and the id goes back to the front untouched.
        if (gone is not None and await gone()) or (yield_to is not None and await yield_to()):
            await requeue(ctx, kind.name, [item[1]])
            return None
        async with ctx.db.transaction() as session:
            now = utcnow()  # after BEGIN: a wait for the SQLite lock must not shorten the lease
            lease = await leasing.acquire(session, kind.model, key, miner_id,
                                          ctx.settings.lease_seconds, now, kind.lease_columns)
            if lease is None:
                continue  # a stale id (taken, claimed, finished or gone): the next one
            await session.execute(update(Miner.__table__).where(Miner.id == miner_id)
                                  .values(last_active=now))
            return await describe(session, key, lease)


async def check_result_signature(ctx: AppContext, who: Wallet, job_id: str, output: str,
                                 signature: str) -> str:
    """The canonical (0x, lower-case) signature if `who` signed keccak256(job_id ‖ output)."""
    canonical = "0x" + signature.removeprefix("0x").lower()
    digest = wallet_sig.result_digest(job_id, output)
    if not await wallet_sig.verify(who.address, digest, canonical, ctx.chain.erc1271 if ctx.chain else None):
        raise Unauthorized("the result signature does not recover to your wallet; sign "
                           "keccak256(utf8(job_id) || utf8(output)) with personal_sign",
                           code="invalid_result_signature")
    return canonical


async def credit_miner(session: AsyncSession, miner_id: int, tokens: int, now: datetime) -> None:
    """Bookkeeping for a completed job, as one atomic UPDATE (never read-modify-write)."""
    await session.execute(
        update(Miner.__table__).where(Miner.id == miner_id)
        .values(job_count=Miner.job_count + 1,
                tokens_generated=Miner.tokens_generated + tokens, last_active=now))


def is_repeat(kind: JobKind, job: Any, lease_id: str, miner_id: int, output: str,
              now: datetime) -> bool:
    """After a result lost the race: True if it repeats the accepted one (answer the same 200);
    otherwise raises the 409 that says why not."""
    if job.lease_id == lease_id and job.miner_id == miner_id:
        if job.status == JobStatus.completed and getattr(job, kind.output_column) == output:
            return True
        if job.status == JobStatus.completed:
            raise Conflict("this job was already completed with a different output",
                           code="already_completed")
        if job.status == JobStatus.failed:
            raise Conflict(f"this job has failed: {job.failure_reason}", code="job_failed")
        if job.status == JobStatus.assigned and job.lease_expires_at and job.lease_expires_at <= now:
            raise Conflict("your lease has expired", code="lease_expired")
    raise Conflict(NOT_CURRENT, code="lease_not_current")


async def extend(ctx: AppContext, kind: JobKind, who: Wallet, job_id: str, lease_id: str,
                 seconds: int | None) -> LeaseOut:
    s = ctx.settings
    job = await kind.get(ctx, job_id)
    length = min(seconds or s.lease_seconds, s.lease_max_extend_s)
    async with ctx.db.transaction() as session:
        expires = await leasing.extend(session, kind.model, job.id, lease_id, miner_id_of(who),
                                       utcnow(), length)
    if expires is None:
        raise Conflict(NOT_CURRENT, code="lease_not_current")
    return LeaseOut(job_id=job_id, lease_id=lease_id, lease_expires_at=expires)


async def release(ctx: AppContext, kind: JobKind, who: Wallet, job_id: str, lease_id: str,
                  reason: str) -> ReleaseOut:
    """The holder gives the job back: redelivered first, or failed after the last attempt."""
    job = await kind.get(ctx, job_id)
    async with ctx.db.transaction() as session:
        status = await leasing.release(session, kind.model, job.id, lease_id, miner_id_of(who),
                                       utcnow(), ctx.settings.max_attempts, reason)
    if status is None:
        raise Conflict(NOT_CURRENT, code="lease_not_current")
    if status == JobStatus.queued:
        await requeue(ctx, kind.name, [job_id])
    else:
        await announce(ctx, job_id)
    return ReleaseOut(job_id=job_id, status=status)


async def announce(ctx: AppContext, job_id: str) -> None:
    """Wake whoever waits on the job; best effort (waiters re-check the DB on a timer)."""
    try:
        await ctx.queue.publish_done(str(job_id))
    except Exception as exc:
        log.debug("could not announce job %s: %s", job_id, type(exc).__name__)


async def requeue(ctx: AppContext, kind: str, job_ids: list[str]) -> None:
    """Redeliveries go to the front. If Redis is down, the reconciler pushes them later."""
    try:
        await ctx.queue.push_front(kind, *job_ids)
    except Exception as exc:
        log.warning("could not requeue %d %s job(s) (%s); the reconciler will",
                    len(job_ids), kind, type(exc).__name__)
