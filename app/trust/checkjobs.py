"""Check jobs: chat_jobs rows a miner leases exactly like a business's job (same endpoints,
same JSON, no flag). A verification job copies a job's prompt, context, history (into a fresh
session id of its own), model and options; a canary job is a canary's prompt and history. Both
carry `purpose` (never shown to a miner) and go on the check lists (app/trust/lists.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext
from app.db import PgUnit, Unit, after_commit
from app.models import Canary, ChatJob, ChatLog, JobStatus
from app.trust import pg as trust_pg
from app.trust.lists import list_for

# A check job that must not go to one wallet (the one whose answer it checks) names it in
# returned_by with this returned_at: the lease rules skip a job its own returner asks for within
# the cooldown, and this cooldown never ends (app/leases/rules.py not_returned_by).
NEVER = datetime(9999, 1, 1, tzinfo=UTC)
VERIFY, CANARY = "verify", "canary"


def excluded_key(c: AppContext) -> str:
    """check job id -> the wallet it must not go to (one hash: one key, also on a Cluster)."""
    return f"{c.settings.redis_prefix}:trust:excluded"


async def history_of(session: AsyncSession, job: Any, limit: int) -> list[tuple[str, str]]:
    """The turns a lease of `job` shows before its prompt (as app/chat/kind.py reads them)."""
    this_turn = (select(ChatLog.id).where(ChatLog.job_id == job.id, ChatLog.role == "user")
                 .scalar_subquery())
    rows = (await session.execute(
        select(ChatLog.role, ChatLog.message)
        .where(ChatLog.session_id == job.session_id, ChatLog.id < this_turn)
        .order_by(ChatLog.id.desc()).limit(limit))).all()
    return [(r.role, r.message) for r in reversed(rows)]


async def _write(session: AsyncSession, c: AppContext, *, prompt: str, context: str | None,
                 history: list[tuple[str, str]], model: str | None, options: str | None,
                 purpose: str, check_model: str, now: datetime, origin: str | None = None,
                 canary_id: int | None = None, exclude: int | None = None,
                 push: bool = True) -> str:
    job_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    if history:
        await session.execute(insert(ChatLog.__table__), [
            dict(session_id=session_id, message=text, role=role, timestamp=now,
                 business_id=None, job_id=None) for role, text in history])
    await session.execute(insert(ChatJob.__table__).values(
        id=job_id, business_id=None, session_id=session_id, prompt=prompt, context=context,
        status=JobStatus.queued, attempts=0, created_at=now, model=model, options=options,
        purpose=purpose, origin_job_id=origin, canary_id=canary_id, check_model=check_model,
        returned_by=exclude, returned_at=NEVER if exclude is not None else None))
    await session.execute(insert(ChatLog.__table__).values(
        session_id=session_id, message=prompt, role="user", timestamp=now, business_id=None,
        job_id=job_id))

    _queue_after_commit(session, c, job_id, check_model=check_model, exclude=exclude, push=push)
    return job_id


def _queue_after_commit(unit: Unit, c: AppContext, job_id: str, *, check_model: str,
                        exclude: int | None, push: bool = True) -> None:
    async def queue() -> None:
        if exclude is not None:
            await c.redis.hset(excluded_key(c), job_id, str(exclude))
        if push:
            await c.queue.push("chat", job_id, model=list_for(check_model))

    after_commit(unit, queue, what="queueing a check job")


async def copy(session: AsyncSession, c: AppContext, origin: Any, *, check_model: str,
               exclude: int | None, now: datetime, push: bool = True) -> str:
    """A verification job for `origin` (a ChatJob row), never leased to `exclude`."""
    history = await history_of(session, origin, c.settings.chat_history_limit)
    return await _write(session, c, prompt=origin.prompt, context=origin.context,
                        history=history, model=origin.model, options=origin.options,
                        purpose=VERIFY, check_model=check_model, now=now,
                        origin=origin.origin_job_id or origin.id, exclude=exclude, push=push)


async def copy_on_driver(unit: PgUnit, c: AppContext, origin_id: str, *, check_model: str,
                         exclude: int | None, now: datetime) -> str | None:
    """copy() on PostgreSQL's driver, in the unit's transaction (app/trust/pg.py COPY: the same
    rows in one statement): the copy's id, or None if the origin is gone."""
    assert unit.conn is not None
    job_id = await trust_pg.copy(unit.conn, origin_id=origin_id, check_model=check_model,
                                 exclude=exclude, now=now,
                                 history_limit=c.settings.chat_history_limit, never=NEVER)
    if job_id is not None:
        _queue_after_commit(unit, c, job_id, check_model=check_model, exclude=exclude)
    return job_id


async def canary_job(session: AsyncSession, c: AppContext, canary: Canary,
                     now: datetime) -> str:
    turns = orjson.loads(canary.history) if canary.history else []
    history = [(t["role"], t["content"]) for t in turns]
    return await _write(session, c, prompt=canary.prompt, context=canary.context,
                        history=history, model=None, options=None, purpose=CANARY,
                        check_model=canary.model or "", now=now, canary_id=canary.id)


async def deliver(session: AsyncSession, c: AppContext, origin_id: str, answer: Any,
                  now: datetime) -> bool:
    """Bootstrap: a business's job that no trusted wallet answered gets an answer two wallets
    agreed on (`answer`, one of the check jobs). True if it was still waiting for one. The
    answering wallet was credited for its check job already; this adds no credit."""
    won = (await session.execute(
        update(ChatJob.__table__).where(ChatJob.id == origin_id, ChatJob.status == JobStatus.queued)
        .values(status=JobStatus.completed, completed_at=now, response=answer.response,
                output_tokens=answer.output_tokens, reported_tokens=answer.reported_tokens,
                miner_id=answer.miner_id, lease_id=None, lease_expires_at=None)
        .returning(ChatJob.session_id, ChatJob.business_id))).first()
    if won is None:
        return False
    await session.execute(insert(ChatLog.__table__).values(
        session_id=won.session_id, message=answer.response, role="assistant", timestamp=now,
        business_id=won.business_id, job_id=origin_id))
    after_commit(session, lambda: c.queue.publish_done(origin_id),
                 what="waking the waiters of a job answered by agreement")
    return True
