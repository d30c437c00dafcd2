"""Retention: conversation content older than a business's period (its retention_days, else
CHAT_RETENTION_DAYS; 0 keeps it forever) is erased by the worker (jobs/retention_tasks.py), the
same way as an erased session (app/accounts/erasure.py), in batches of short transactions.
One Erasure (scope retention, actor "worker") per business per run that found something."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import erasure
from app.accounts.erasure import (TERMINAL, Swept, add_counts, delete_turns, erase_chat_jobs,
                                  erase_idle_jobs, forget_after_commit, new_erasure, of_business)
from app.context import AppContext
from app.models import Business, ChatJob, ChatLog, ChatSession, IdleJob, utcnow


@dataclass(frozen=True)
class Expired:
    business_id: int | None  # None: anonymous chat and check jobs (CHAT_RETENTION_DAYS)
    erasure_id: int
    before: datetime
    jobs: int
    messages: int


async def retention_plan(c: AppContext, now: datetime) -> list[tuple[int | None, datetime]]:
    """(business id, erase content older than) for every business that keeps content for a
    limited time: its own retention_days, else CHAT_RETENTION_DAYS; 0 keeps it forever. None
    stands for content of no business (anonymous chat, check jobs): CHAT_RETENTION_DAYS."""
    default = c.settings.chat_retention_days
    async with c.db.reads() as session:
        rows = (await session.execute(select(Business.id, Business.retention_days)
                                      .order_by(Business.id))).all()
    plan: list[tuple[int | None, datetime]] = []
    for business_id, days in rows:
        days = default if days is None else days
        if days > 0:
            plan.append((business_id, now - timedelta(days=days)))
    if default > 0:
        plan.append((None, now - timedelta(days=default)))
    return plan


async def erase_expired(c: AppContext, now: datetime | None = None) -> list[Expired]:
    """Retention: per business, content older than its period erased in batches (each batch
    its own short transaction), one Erasure (scope retention, actor "worker") per business
    that had something to erase. Idempotent: what is erased is not found again."""
    now = now or utcnow()
    done: list[Expired] = []
    for business_id, before in await retention_plan(c, now):
        found = await _expire(c, business_id, before, now)
        if found is not None:
            done.append(found)
    return done


async def _expire(c: AppContext, business_id: int | None, before: datetime,
                  now: datetime) -> Expired | None:
    erasure_id: int | None = None
    total = Swept()

    async def record(session: AsyncSession) -> int:
        nonlocal erasure_id
        if erasure_id is None:
            erasure_id = await new_erasure(session, business_id=business_id, scope="retention",
                                            actor="worker", now=now, before=before)
        return erasure_id

    old_chat = and_(of_business(ChatJob.business_id, business_id), ChatJob.erased_at.is_(None),
                    ChatJob.status.in_(TERMINAL),
                    func.coalesce(ChatJob.completed_at, ChatJob.created_at) < before)
    while True:
        async with c.db.transaction() as session:
            ids = (await session.execute(select(ChatJob.id).where(old_chat).order_by(ChatJob.id)
                                         .limit(erasure.BATCH))).scalars().all()
            if not ids:
                break
            eid = await record(session)
            swept = await erase_chat_jobs(session, c, list(ids), eid, now)
            await add_counts(session, eid, swept)
            forget_after_commit(session, c, swept)
        total.add(swept)
    old_idle = and_(of_business(IdleJob.business_id, business_id),
                    IdleJob.erased_at.is_(None), IdleJob.status.in_(TERMINAL),
                    func.coalesce(IdleJob.completed_at, IdleJob.created_at) < before)
    while True:
        async with c.db.transaction() as session:
            idle = (await session.execute(select(IdleJob.id).where(old_idle).order_by(IdleJob.id)
                                          .limit(erasure.BATCH))).scalars().all()
            if not idle:
                break
            eid = await record(session)
            swept = await erase_idle_jobs(session, list(idle), now)
            await add_counts(session, eid, swept)
        total.add(swept)
    old_turns = and_(of_business(ChatLog.business_id, business_id),
                     ChatLog.timestamp < before)
    async with c.db.reads() as session:
        any_turn = (await session.execute(select(ChatLog.id).where(old_turns).limit(1))).first()
    if any_turn is not None:
        async with c.db.transaction() as session:
            eid = await record(session)
        total.add(await delete_turns(c, old_turns, eid))
    # a session with nothing left of it: its row (the name) goes too
    async with c.db.transaction() as session:
        await session.execute(delete(ChatSession).where(
            of_business(ChatSession.business_id, business_id), ChatSession.created_at < before,
            ~exists().where(ChatLog.session_id == ChatSession.session_id,
                            of_business(ChatLog.business_id, business_id)),
            ~exists().where(ChatJob.session_id == ChatSession.session_id,
                            of_business(ChatJob.business_id, business_id)))
            .execution_options(synchronize_session=False))
    if erasure_id is None:
        return None
    return Expired(business_id, erasure_id, before, total.jobs, total.messages)
