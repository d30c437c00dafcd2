"""Idle jobs from the miner's side: what a lease hands out (prompt, max_tokens) and what a result
writes (the job, its charge and the RevenueEvent booked from it). The lease rules themselves are
app/leases."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import billing
from app.context import AppContext
from app.idle.schemas import IdleAssignment, IdleResultOut
from app.leases import rules
from app.leases.protocol import Completion, JobKind
from app.leases.rules import Lease
from app.models import IdleJob

MAX_DB_ID = 2**31 - 1
ZERO = Decimal("0.000000")


def parse_job_id(job_id: str) -> int | None:
    """Idle job ids are positive ints; in URLs and the queue they travel as decimal text, in
    one spelling only (no leading zeros): results are signed over that text."""
    if not job_id.isascii() or not job_id.isdigit() or len(job_id) > 10 or job_id[0] == "0":
        return None
    value = int(job_id)
    return value if value <= MAX_DB_ID else None


async def hand_out(session: AsyncSession, ctx: AppContext,
                   leases: list[Lease]) -> list[IdleAssignment]:
    return [IdleAssignment(job_id=lease.job_id, lease_id=lease.lease_id,
                           lease_expires_at=lease.expires_at, prompt=lease.fields[0],
                           max_tokens=lease.fields[1], attempt=lease.attempt)
            for lease in leases]


def billed_tokens(counted: int, max_tokens: int) -> int:
    """The server's count of the output, capped at the job's max_tokens (what the client was
    quoted as the most it pays). The miner's own count plays no part."""
    return min(counted, max_tokens)


async def complete(session: AsyncSession, ctx: AppContext,
                   c: Completion) -> tuple[IdleResultOut, int] | None:
    max_tokens = (await session.execute(
        select(IdleJob.max_tokens).where(IdleJob.id == c.key))).scalar()
    if max_tokens is None:
        return None
    tokens = billed_tokens(c.tokens, max_tokens)
    won = await rules.complete(session, IdleJob, c.key, c.lease_id, c.miner_id, c.now,
                               result=c.output, output_tokens=tokens,
                               reported_tokens=c.reported_tokens, usd_earned=ZERO,
                               signature=c.signature, processed_by="miner")
    if won is None:
        return None
    earned = await charge(session, c.key, tokens, "miner", c.now)
    return (IdleResultOut(job_id=c.job_id, status="completed", output_tokens=tokens,
                          usd_earned=earned, completed_at=c.now), tokens)


async def charge(session: AsyncSession, job_id: int, tokens: int, source: str,
                 now: datetime) -> Decimal:
    """The job just completed (its conditional UPDATE won, in this transaction): charge its hold
    for `tokens` and book the charge as its revenue; what it earned (0 without a hold: nothing
    was paid). usd_earned is written from the charge: one figure everywhere."""
    charged = await billing.settle(session, billing.IDLE, str(job_id), tokens, source=source,
                                   now=now, idle_job_id=job_id)
    if charged is None:
        return ZERO
    await session.execute(update(IdleJob).where(IdleJob.id == job_id)
                          .values(usd_earned=charged.amount_usd)
                          .execution_options(synchronize_session=False))
    return charged.amount_usd


def answer(job: IdleJob) -> IdleResultOut:
    return IdleResultOut(job_id=str(job.id), status="completed", output_tokens=job.output_tokens or 0,
                         usd_earned=job.usd_earned or Decimal(0), completed_at=job.completed_at)


async def chat_waiting(ctx: AppContext) -> bool:
    """Idle work waits while any chat job is queued: chat comes first."""
    return await ctx.queue.depth("chat") > 0


IDLE = JobKind(name="idle", model=IdleJob, parse_id=parse_job_id, output_column="result",
               hand_out=hand_out, complete=complete, answer=answer,
               lease_columns=(IdleJob.prompt, IdleJob.max_tokens), yields=chat_waiting,
               before_complete=lambda session, keys: billing.lock_payers(session, IdleJob, keys),
               # RunPod finished it: this miner's lease is history
               finished_elsewhere=lambda job: job.processed_by == "runpod")
