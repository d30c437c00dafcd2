"""Chat jobs from the client's side: submit, read, wait, history."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from redis.exceptions import RedisError
from sqlalchemy import delete, select

from app.auth.principals import Client
from app.context import AppContext
from app.errors import Forbidden, NotFound, ServiceUnavailable
from app.models import ChatJob, ChatLog, JobStatus, utcnow

log = logging.getLogger(__name__)
TERMINAL = (JobStatus.completed, JobStatus.failed)


async def submit(ctx: AppContext, client: Client, message: str, session_id: str | None,
                 context: str | None) -> ChatJob:
    now = utcnow()
    job = ChatJob(id=str(uuid.uuid4()), business_id=client.business_id,
                  session_id=session_id or str(uuid.uuid4()), prompt=message, context=context,
                  status=JobStatus.queued, attempts=0, created_at=now)
    async with ctx.db.transaction() as session:
        if session_id is not None:
            owner = (await session.execute(
                select(ChatLog.business_id).where(ChatLog.session_id == session_id).limit(1))).first()
            if owner is not None and owner[0] != client.business_id:
                raise Forbidden("this session_id belongs to another client", code="session_forbidden")
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
                                 code="queue_unavailable") from None
    return job


async def get_owned(ctx: AppContext, client: Client, job_id: str) -> ChatJob:
    async with ctx.db.sessions() as session:
        job = await session.get(ChatJob, job_id) if len(job_id) <= 36 else None
    if job is None or job.business_id != client.business_id:
        raise NotFound("no such chat job", code="job_not_found")
    return job


async def wait_for(ctx: AppContext, client: Client, job: ChatJob, wait_s: float) -> ChatJob:
    if wait_s <= 0 or job.status in TERMINAL:
        return job
    latest = job

    async def finished() -> bool:
        nonlocal latest
        latest = await get_owned(ctx, client, job.id)
        return latest.status in TERMINAL

    await ctx.notifier.wait_until(job.id, wait_s, finished)
    return latest


async def session_messages(ctx: AppContext, client: Client, session_id: str) -> Sequence[ChatLog]:
    async with ctx.db.sessions() as session:
        rows = (await session.execute(
            select(ChatLog).where(ChatLog.session_id == session_id)
            .order_by(ChatLog.id))).scalars().all()
    if not rows or rows[0].business_id != client.business_id:
        raise NotFound("no such chat session", code="session_not_found")
    return rows
