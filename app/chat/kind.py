"""Chat jobs from the miner's side: what a lease hands out (the prompt with the session's
history) and what a result writes (the job, the assistant's turn). The lease rules themselves
are app/leases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import trust
from app.accounts import billing
from app.chat import lite, options, pg
from app.chat.schemas import ChatAssignment, HistoryItem, ResultOut
from app.context import AppContext
from app.errors import AppError
from app.leases import rules
from app.leases.protocol import Completion, FastPath, JobKind, StreamAsk
from app.leases.rules import Lease
from app.models import ChatJob, ChatLog

def parse_id(text: str) -> str | None:
    return text if 0 < len(text) <= 36 else None


async def hand_out(session: AsyncSession, ctx: AppContext,
                   leases: list[Lease]) -> list[ChatAssignment]:
    limit = ctx.settings.chat_history_limit
    out = []
    for lease in leases:
        prompt, context, session_id, model, raw_options, business_id = lease.fields
        out.append(options.assignment(
            job_id=lease.job_id, lease_id=lease.lease_id, expires_at=lease.expires_at,
            prompt=prompt, context=context, session_id=session_id,
            history=await _history(session, lease.job_id, session_id, business_id, limit),
            attempt=lease.attempt, model=model, raw_options=raw_options))
    return out


async def _history(session: AsyncSession, job_id: str, session_id: str,
                   business_id: int | None, limit: int) -> list[HistoryItem]:
    this_turn = (select(ChatLog.id).where(ChatLog.job_id == job_id, ChatLog.role == "user")
                 .scalar_subquery())
    rows = (await session.execute(
        select(ChatLog.role, ChatLog.message)
        .where(ChatLog.session_id == session_id,  # session ids are scoped per business
               ChatLog.business_id.is_not_distinct_from(business_id), ChatLog.id < this_turn)
        .order_by(ChatLog.id.desc()).limit(limit))).all()
    return [HistoryItem(role=r.role, content=r.message) for r in reversed(rows)]


async def complete(session: AsyncSession, ctx: AppContext,
                   c: Completion) -> tuple[ResultOut, int, bool] | None:
    # the server's count, capped at what the client allowed (max_tokens): credited and reported
    raw = (await session.execute(select(ChatJob.options).where(ChatJob.id == c.key))).scalar()
    tokens = options.capped(c.tokens, raw)
    won = await rules.complete(session, ChatJob, c.key, c.lease_id, c.miner_id, c.now,
                               returning=(ChatJob.session_id, ChatJob.business_id,
                                          ChatJob.hold_usd, ChatJob.purpose),
                               response=c.output, output_tokens=tokens,
                               reported_tokens=c.reported_tokens, signature=c.signature,
                               finish_reason=c.finish_reason)
    if won is None:
        return None
    session_id, business_id, held, purpose = won
    if held is not None:  # a priced job: charged for the server's count, booked as revenue
        await billing.settle(session, billing.CHAT, c.key, tokens, source="chat", now=c.now)
    await session.execute(insert(ChatLog.__table__).values(
        session_id=session_id, message=c.output, role="assistant", timestamp=c.now,
        business_id=business_id, job_id=c.job_id))
    return (ResultOut(job_id=c.job_id, status="completed", session_id=session_id,
                      output_tokens=tokens, completed_at=c.now), tokens, purpose is not None)


# An answer longer than this is not put in the wake-up (every API process receives every
# message): its waiter reads it from the database instead.
WAKE_MAX_CHARS = 16_384


def wake_answer(c: Completion, won: tuple[ResultOut, int, bool]) -> dict[str, Any] | None:
    """What a waiter of the job shows once it is answered (app/chat/service.wait_for): the
    fields COMPLETE wrote, as a read of the job would return them."""
    if len(c.output) > WAKE_MAX_CHARS:
        return None
    return {"status": "completed", "response": c.output, "output_tokens": won[1],
            "finish_reason": c.finish_reason, "completed_at": c.now.isoformat()}


def answer(job: ChatJob) -> ResultOut:
    return ResultOut(job_id=job.id, status="completed", session_id=job.session_id,
                     output_tokens=job.output_tokens, completed_at=job.completed_at)


async def _fast_lease(conn: Any, ctx: AppContext, keys: list[Any], miner_id: int,
                      now: datetime, cap: int) -> pg.Leased:
    s = ctx.settings
    return await pg.lease(conn, keys, miner_id, s.lease_seconds, now, s.chat_history_limit,
                          s.returned_job_cooldown_s, s.max_attempts, cap=cap)


async def _lite_lease(db: Any, ctx: AppContext, keys: list[Any], miner_id: int,
                      now: datetime) -> list[ChatAssignment]:
    s = ctx.settings
    return await lite.lease(db, keys, miner_id, s.lease_seconds, now, s.chat_history_limit,
                            s.returned_job_cooldown_s, s.max_attempts)


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


def streamed(fields: tuple[Any, ...]) -> StreamAsk | None:
    """A /v1 job asked with stream: true takes chunks, bounded by its max_tokens."""
    asked = options.load(fields[0])
    return StreamAsk(max_tokens=asked.max_tokens) if asked.stream else None


class InvalidOutput(AppError):
    status, code = 422, "invalid_output"


async def vet(ctx: AppContext, done: list[Completion],
              read: dict[Any, Any] | None = None) -> list[AppError | None]:
    """Results for jobs that asked for tool calls or structured output, checked against what
    was asked: one that does not match is refused (422 invalid_output); the miner gives the job
    back and another miner gets it, so the client never sees it. What was asked comes with the
    lease check (`read`, by pg.VET_COLUMN, on the drivers' hot path) or, where that did not
    read it (the ORM's path), one read for all of them, only of jobs whose options ask."""
    if read is not None:
        asked = read
    else:
        ids = list({c.job_id for c in done})
        async with ctx.db.reads() as session:
            found = (await session.execute(select(ChatJob.id, ChatJob.options).where(
                ChatJob.id.in_(ids), or_(ChatJob.options.contains('"tools"'),
                                         ChatJob.options.contains('"response_format"'))))).all()
        asked = {r.id: r.options for r in found}
    out: list[AppError | None] = []
    for c in done:
        why = options.vet(asked[c.job_id], c.output, c.finish_reason) if c.job_id in asked \
            else None
        out.append(None if why is None else InvalidOutput(
            f"the answer does not do what the client asked: {why}; give the job back"))
    return out


CHAT = JobKind(name="chat", model=ChatJob, parse_id=parse_id, output_column="response",
               hand_out=hand_out, complete=complete, answer=answer,
               lease_columns=(ChatJob.prompt, ChatJob.context, ChatJob.session_id,
                              ChatJob.model, ChatJob.options, ChatJob.business_id),
               fast=FastPath(lease=_fast_lease, complete=pg.complete, lite_lease=_lite_lease,
                             lite_complete=lite.complete,
                             transactional=lambda c: billing.chat_priced(c.settings)),
               models_of=models_of,
               stream_columns=(ChatJob.options,), streamed=streamed, vet=vet,
               vet_column=pg.VET_COLUMN,
               route=trust.route, completed=trust.completed, wake_answer=wake_answer)
