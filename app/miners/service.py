"""The miner's side of chat jobs: registration, leases, signed results, bookkeeping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import leasing
from app.auth.principals import Wallet
from app.context import AppContext
from app.errors import Conflict
from app.miners import flow
from app.miners.schemas import ChatAssignment, HistoryItem, LeaseOut, ReleaseOut, ResultOut
from app.models import ChatJob, ChatLog, Miner, utcnow


def _chat_id(text: str) -> str | None:
    return text if 0 < len(text) <= 36 else None


CHAT = flow.JobKind(name="chat", model=ChatJob, parse_id=_chat_id, output_column="response",
                    lease_columns=(ChatJob.prompt, ChatJob.context, ChatJob.session_id))


async def register(ctx: AppContext, address: str, name: str | None) -> Miner:
    for _ in range(2):  # a concurrent first registration of the same address loses the insert
        try:
            async with ctx.db.transaction() as session:
                miner = await find_miner(session, address)
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
    limit = ctx.settings.chat_history_limit

    async def describe(session: AsyncSession, key: str, lease: leasing.Lease) -> ChatAssignment:
        prompt, context, session_id = lease.fields
        return ChatAssignment(job_id=key, lease_id=lease.lease_id,
                              lease_expires_at=lease.expires_at, prompt=prompt, context=context,
                              session_id=session_id,
                              history=await _history(session, key, session_id, limit),
                              attempt=lease.attempt)

    return await flow.leased(ctx, CHAT, who, wait_s, describe, gone=gone)  # type: ignore[no-any-return]


async def _history(session: AsyncSession, job_id: str, session_id: str,
                   limit: int) -> list[HistoryItem]:
    this_turn = (select(ChatLog.id).where(ChatLog.job_id == job_id, ChatLog.role == "user")
                 .scalar_subquery())
    rows = (await session.execute(
        select(ChatLog.role, ChatLog.message)
        .where(ChatLog.session_id == session_id, ChatLog.id < this_turn)
        .order_by(ChatLog.id.desc()).limit(limit))).all()
    return [HistoryItem(role=r.role, content=r.message) for r in reversed(rows)]


async def submit_result(ctx: AppContext, who: Wallet, job_id: str, lease_id: str, output: str,
                        output_tokens: int | None, signature: str) -> ResultOut:
    miner_id = flow.miner_id_of(who)
    signature = await flow.check_result_signature(ctx, who, job_id, output, signature)
    now = utcnow()
    async with ctx.db.transaction() as session:
        won = await leasing.complete(session, ChatJob, job_id, lease_id, miner_id, now,
                                     returning=(ChatJob.session_id, ChatJob.business_id),
                                     response=output, output_tokens=output_tokens,
                                     signature=signature)
        if won is not None:
            session_id, business_id = won
            await session.execute(insert(ChatLog.__table__).values(
                session_id=session_id, message=output, role="assistant", timestamp=now,
                business_id=business_id, job_id=job_id))
            await flow.credit_miner(session, miner_id, output_tokens or 0, now)
    if won is None:
        job = await CHAT.get(ctx, job_id)
        flow.is_repeat(CHAT, job, lease_id, miner_id, output, now)
        return ResultOut(job_id=job.id, status="completed", session_id=job.session_id,
                         output_tokens=job.output_tokens, completed_at=job.completed_at)
    await flow.announce(ctx, job_id)
    return ResultOut(job_id=job_id, status="completed", session_id=session_id,
                     output_tokens=output_tokens, completed_at=now)


async def extend_lease(ctx: AppContext, who: Wallet, job_id: str, lease_id: str,
                       seconds: int | None) -> LeaseOut:
    return await flow.extend(ctx, CHAT, who, job_id, lease_id, seconds)


async def release_lease(ctx: AppContext, who: Wallet, job_id: str, lease_id: str,
                        reason: str) -> ReleaseOut:
    return await flow.release(ctx, CHAT, who, job_id, lease_id, reason)
