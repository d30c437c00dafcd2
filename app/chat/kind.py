"""Chat jobs from the miner's side: what a lease hands out (the prompt with the session's
history) and what a result writes (the job, the assistant's turn). The lease rules themselves
are app/leases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import trust
from app.chat import options, pg
from app.chat.schemas import ChatAssignment, HistoryItem, ResultOut
from app.context import AppContext
from app.leases import rules
from app.leases.protocol import Completion, FastPath, JobKind
from app.leases.rules import Lease
from app.models import ChatJob, ChatLog

def parse_id(text: str) -> str | None:
    return text if 0 < len(text) <= 36 else None


async def hand_out(session: AsyncSession, ctx: AppContext,
                   leases: list[Lease]) -> list[ChatAssignment]:
    limit = ctx.settings.chat_history_limit
    out = []
    for lease in leases:
        prompt, context, session_id, model, raw_options = lease.fields
        out.append(options.assignment(
            job_id=lease.job_id, lease_id=lease.lease_id, expires_at=lease.expires_at,
            prompt=prompt, context=context, session_id=session_id,
            history=await _history(session, lease.job_id, session_id, limit),
            attempt=lease.attempt, model=model, raw_options=raw_options))
    return out


async def _history(session: AsyncSession, job_id: str, session_id: str,
                   limit: int) -> list[HistoryItem]:
    this_turn = (select(ChatLog.id).where(ChatLog.job_id == job_id, ChatLog.role == "user")
                 .scalar_subquery())
    rows = (await session.execute(
        select(ChatLog.role, ChatLog.message)
        .where(ChatLog.session_id == session_id, ChatLog.id < this_turn)
        .order_by(ChatLog.id.desc()).limit(limit))).all()
    return [HistoryItem(role=r.role, content=r.message) for r in reversed(rows)]


async def complete(session: AsyncSession, ctx: AppContext,
                   c: Completion) -> tuple[ResultOut, int] | None:
    won = await rules.complete(session, ChatJob, c.key, c.lease_id, c.miner_id, c.now,
                               returning=(ChatJob.session_id, ChatJob.business_id),
                               response=c.output, output_tokens=c.tokens,
                               reported_tokens=c.reported_tokens, signature=c.signature)
    if won is None:
        return None
    session_id, business_id = won
    await session.execute(insert(ChatLog.__table__).values(
        session_id=session_id, message=c.output, role="assistant", timestamp=c.now,
        business_id=business_id, job_id=c.job_id))
    return (ResultOut(job_id=c.job_id, status="completed", session_id=session_id,
                      output_tokens=c.tokens, completed_at=c.now), c.tokens)


def answer(job: ChatJob) -> ResultOut:
    return ResultOut(job_id=job.id, status="completed", session_id=job.session_id,
                     output_tokens=job.output_tokens, completed_at=job.completed_at)


async def _fast_lease(conn: Any, ctx: AppContext, keys: list[Any], miner_id: int,
                      now: datetime) -> list[ChatAssignment]:
    s = ctx.settings
    return await pg.lease(conn, keys, miner_id, s.lease_seconds, now, s.chat_history_limit,
                          s.returned_job_cooldown_s)


async def models_of(ctx: AppContext, job_ids: list[str]) -> dict[str, str]:
    """The list each of these jobs goes back to, for those not on the common one: the model a
    /v1 job named, or a check job's list (app/trust)."""
    async with ctx.db.reads() as session:
        rows = (await session.execute(select(
            ChatJob.id, ChatJob.model, ChatJob.purpose, ChatJob.check_model).where(
            ChatJob.id.in_(job_ids),
            or_(ChatJob.model.is_not(None), ChatJob.purpose.is_not(None))))).all()
    return {r.id: listed for r in rows
            if (listed := trust.routed_list(r.model, r.purpose, r.check_model)) is not None}


CHAT = JobKind(name="chat", model=ChatJob, parse_id=parse_id, output_column="response",
               hand_out=hand_out, complete=complete, answer=answer,
               lease_columns=(ChatJob.prompt, ChatJob.context, ChatJob.session_id,
                              ChatJob.model, ChatJob.options),
               fast=FastPath(lease=_fast_lease, complete=pg.complete), models_of=models_of,
               route=trust.route, completed=trust.completed)
