"""Chat jobs from the client's side: submit, read, wait, history."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principals import Client
from app.context import AppContext
from app.errors import Forbidden, NotFound, ServiceUnavailable
from app.models import ChatJob, ChatLog, ChatSession, JobStatus, utcnow

log = logging.getLogger(__name__)
TERMINAL = (JobStatus.completed, JobStatus.failed)


async def submit(ctx: AppContext, client: Client, message: str, session_id: str | None,
                 context: str | None) -> ChatJob:
    now = utcnow()
    job = ChatJob(id=str(uuid.uuid4()), business_id=client.business_id,
                  session_id=session_id or str(uuid.uuid4()), prompt=message, context=context,
                  status=JobStatus.queued, attempts=0, created_at=now)
    async with ctx.db.transaction() as session:
        await _claim_session(session, client, job.session_id, supplied=session_id is not None)
        session.add(job)
        await session.flush()
        session.add(ChatLog(session_id=job.session_id, message=message, role="user",
                            timestamp=now, business_id=client.business_id, job_id=job.id))
    try:
        await ctx.queue.push("chat", job.id)
    except RedisError:
        # Never answer "queued" for a job no miner can see: take it back and say so.
        async with ctx.db.transaction() as session:
            await session.execute(delete(ChatLog).where(ChatLog.job_id == job.id))
            await session.execute(delete(ChatJob).where(ChatJob.id == job.id))
        log.warning("chat refused: the job queue (Redis) is unavailable")
        raise ServiceUnavailable("the job queue is unavailable; nothing was queued, retry later",
                                 code="queue_unavailable", headers={"Retry-After": "5"}) from None
    return job


async def _claim_session(session: AsyncSession, client: Client, session_id: str, *,
                         supplied: bool) -> None:
    """The first message of a session claims it for its business; later ones must match."""
    owner = await session.get(ChatSession, session_id)
    if owner is None:
        if client.anonymous and supplied:
            # An anonymous session is a capability: only ids this server handed out work.
            raise Forbidden("anonymous chats cannot choose a session_id; omit it and reuse the "
                            "one returned", code="session_forbidden")
        try:
            async with session.begin_nested():
                session.add(ChatSession(session_id=session_id, business_id=client.business_id))
            return
        except IntegrityError:  # another request claimed this new id a moment ago
            owner = (await session.execute(
                select(ChatSession).where(ChatSession.session_id == session_id)
                .execution_options(populate_existing=True))).scalar_one()
    if owner.business_id != client.business_id:
        raise Forbidden("this session_id belongs to another client", code="session_forbidden")


async def get_owned(ctx: AppContext, client: Client, job_id: str) -> ChatJob:
    async with ctx.db.sessions() as session:
        job = await session.get(ChatJob, job_id) if len(job_id) <= 36 else None
    if job is None or job.business_id != client.business_id:
        raise NotFound("no such chat job", code="job_not_found")
    return job


async def wait_for(ctx: AppContext, client: Client, job: ChatJob, wait_s: float) -> ChatJob:
    return await ctx.notifier.wait_for(job.id, wait_s, job,
                                       lambda: get_owned(ctx, client, job.id),
                                       lambda j: j.status in TERMINAL)


async def session_messages(ctx: AppContext, client: Client, session_id: str) -> Sequence[ChatLog]:
    async with ctx.db.sessions() as session:
        owner = await session.get(ChatSession, session_id)
        if owner is None or owner.business_id != client.business_id:
            raise NotFound("no such chat session", code="session_not_found")
        rows = (await session.execute(
            select(ChatLog).where(ChatLog.session_id == session_id,
                                  ChatLog.business_id == client.business_id)
            .order_by(ChatLog.id))).scalars().all()
    return rows
