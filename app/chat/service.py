"""Chat jobs from the client's side: submit, read, wait, history."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Insert, Table, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import idempotency, observability
from app.accounts import billing
from app.auth.principals import Client
from app.chat import group, lite, pg
from app.chat import options as chat_options
from app.context import AppContext
from app.db import LiteUnit, PgUnit, Unit, after_commit
from app.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from app.models import ChatJob, ChatLog, ChatSession, JobStatus, utcnow

log = logging.getLogger(__name__)
TERMINAL = (JobStatus.completed, JobStatus.failed)


Turn = tuple[str, str]  # (role, text): a user or assistant turn


async def submit(unit: Unit, ctx: AppContext, client: Client, message: str,
                 session_id: str | None, context: str | None, *, model: str | None = None,
                 options: str | None = None, earlier: Sequence[Turn] | None = None) -> ChatJob:
    """Write the job and the user's turn in the caller's unit (a session, or on PostgreSQL the
    hot path's one statement); the job id is pushed to the queue once it has committed.

    /v1 requests also name a model (the job goes on that model's list), options for the miner,
    and the conversation's `earlier` turns: a new session records them before this one; a
    continued session must already hold them in order (what it lacks at the end is added)."""
    now = utcnow()
    job = ChatJob(id=str(uuid.uuid4()), business_id=client.business_id,
                  session_id=session_id or str(uuid.uuid4()), prompt=message, context=context,
                  status=JobStatus.queued, attempts=0, created_at=now, model=model,
                  options=options, api_key_id=client.api_key_id)
    observability.set_fields(job_id=job.id)  # the rest of the request's log lines name it
    supplied = session_id is not None
    if isinstance(unit, PgUnit):
        if earlier:
            raise ValueError("earlier turns are written through a SQLAlchemy session")
        if billing.chat_priced(ctx.settings):
            raise ValueError("priced chat holds money through a SQLAlchemy session")
        # an anonymous caller may only continue a session this server handed out
        may_claim = not (supplied and client.anonymous)
        row = group.Row(job_id=job.id, business_id=client.business_id,
                        session_id=job.session_id, may_claim=may_claim, prompt=message,
                        context=context, now=now, model=model, options=options,
                        api_key_id=client.api_key_id)
        s = ctx.settings
        for _ in range(2):
            if unit.conn is None:  # with the other submissions of this moment: one statement
                queued = await group.of(ctx.db, s.chat_submit_group_max,
                                        s.chat_submit_group_window_ms).submit(row)
            else:
                queued = await pg.submit(
                    unit.conn, job_id=job.id, business_id=client.business_id,
                    session_id=job.session_id, may_claim=may_claim, prompt=message,
                    context=context, now=now, model=model, options=options,
                    api_key_id=client.api_key_id)
            if queued:
                break
            if not may_claim:
                raise _anonymous_choice()
            # claimed by a concurrent first message of this business a moment ago, after this
            # statement's snapshot: the next one sees it
        else:
            raise Conflict("the session could not be claimed; retry", code="session_busy")
    elif isinstance(unit, LiteUnit):  # SQLite: the same step as one transaction, no ORM
        if earlier:
            raise ValueError("earlier turns are written through a SQLAlchemy session")
        if not await lite.submit(
                unit.lite, job_id=job.id, business_id=client.business_id,
                session_id=job.session_id, may_claim=not (supplied and client.anonymous),
                prompt=message, context=context, now=now, model=model, options=options,
                api_key_id=client.api_key_id):
            raise _anonymous_choice()
    else:  # Core inserts: the ORM's flush costs more here
        await _claim_session(unit, client, job.session_id, supplied=supplied)
        if earlier:
            await _add_earlier_turns(unit, client, job.session_id, earlier, now)
        # priced chat: the most it may cost, held before anything is queued (401/402 and a
        # rollback when there is no business, or its balance or the key's limit is short)
        job.hold_usd = await billing.hold_for(
            unit, ctx.settings, client, billing.CHAT, job.id,
            chat_options.load(options).max_tokens if options else None, model, now=now)
        await unit.execute(insert(ChatJob.__table__).values(
            id=job.id, business_id=job.business_id, session_id=job.session_id, prompt=message,
            context=context, status=JobStatus.queued, attempts=0, created_at=now, model=model,
            options=options, api_key_id=client.api_key_id, hold_usd=job.hold_usd))
        await unit.execute(insert(ChatLog.__table__).values(
            session_id=job.session_id, message=message, role="user", timestamp=now,
            business_id=client.business_id, job_id=job.id))
    after_commit(unit, lambda: _push_or_withdraw(ctx, job.id, model), what="queueing a chat job",
                 required=True)
    return job


def fast_unit(ctx: AppContext) -> Callable[[], AbstractAsyncContextManager[Unit]] | None:
    """The unit a submission without earlier turns or an Idempotency-Key runs in: on PostgreSQL
    a group's statement (CHAT_SUBMIT_GROUP_MAX > 1) or one statement on a connection of its
    own; SQLite's own driver (app/lite.py); None for priced chat (it holds money, through a
    SQLAlchemy transaction: app/accounts) and without a hot path."""
    if not ctx.db.hot or billing.chat_priced(ctx.settings):
        return None
    if ctx.db.pg is not None and ctx.settings.chat_submit_group_max > 1:
        return group.unit
    return lambda: ctx.db.fast(transaction=False)


async def _add_earlier_turns(session: AsyncSession, client: Client, session_id: str,
                             earlier: Sequence[Turn], now: datetime) -> None:
    """The conversation so far, as the client sent it, into the session: the stored turns must
    be its beginning (the client may not rewrite history the session shows); the rest is added."""
    stored = [(r.role, r.message) for r in (await session.execute(
        select(ChatLog.role, ChatLog.message).where(
            ChatLog.session_id == session_id,
            ChatLog.business_id.is_not_distinct_from(client.business_id))
        .order_by(ChatLog.id))).all()]
    if list(earlier[:len(stored)]) != stored:
        raise Conflict("the messages do not continue this session's history (GET "
                       f"/chat/sessions/{session_id}/messages): send its turns in order, or "
                       "start a new session", code="session_history_mismatch")
    added = earlier[len(stored):]
    if added:
        await session.execute(insert(ChatLog.__table__), [
            dict(session_id=session_id, message=text, role=role, timestamp=now,
                 business_id=client.business_id, job_id=None) for role, text in added])


async def _push_or_withdraw(ctx: AppContext, job_id: str, model: str | None = None) -> None:
    """Never answer "queued" for a job no miner can see: if Redis refuses it, take it back and
    say so (503)."""
    try:
        await ctx.queue.push("chat", job_id, model=model)
    except RedisError:
        async with ctx.db.transaction() as session:
            await idempotency.forget_job(session, job_id)  # a retry with its key tries anew
            await billing.release(session, billing.CHAT, [job_id], note="never queued")
            await session.execute(delete(ChatLog).where(ChatLog.job_id == job_id))
            await session.execute(delete(ChatJob).where(ChatJob.id == job_id))
        log.warning("chat refused: the job queue (Redis) is unavailable")
        raise ServiceUnavailable("the job queue is unavailable; nothing was queued, retry later",
                                 code="queue_unavailable", headers={"Retry-After": "5"}) from None


async def _claim_session(session: AsyncSession, client: Client, session_id: str, *,
                         supplied: bool) -> None:
    """Session ids are scoped per business: the first message of a business's session creates
    it (an INSERT that ignores a concurrent twin), later ones find it. Another business's
    session of the same name is a different session, never seen. Anonymous callers may only
    continue sessions the server handed out."""
    if supplied and client.anonymous:
        if not await _session_exists(session, client, session_id):
            raise _anonymous_choice()
        return
    await session.execute(
        _insert_ignoring_conflict(session, ChatSession.__table__)
        .values(session_id=session_id, business_id=client.business_id, created_at=utcnow()))


async def _session_exists(session: AsyncSession, client: Client, session_id: str) -> bool:
    return (await session.execute(select(ChatSession.id).where(
        ChatSession.session_id == session_id,
        ChatSession.business_id.is_not_distinct_from(client.business_id)))).first() is not None


def _anonymous_choice() -> Forbidden:
    # An anonymous session is a capability: only ids this server handed out work.
    return Forbidden("anonymous chats cannot choose a session_id; omit it and reuse the one "
                     "returned", code="session_forbidden")


def _insert_ignoring_conflict(session: AsyncSession, table: Table) -> Insert:
    dialect = session.bind.dialect.name
    insert_for = sqlite_insert if dialect == "sqlite" else pg_insert
    return insert_for(table).on_conflict_do_nothing()  # type: ignore[no-any-return]


async def get_owned(ctx: AppContext, client: Client, job_id: str) -> ChatJob:
    if len(job_id) > 36:
        job = None
    elif ctx.db.pg is not None:
        async with ctx.db.fast_reads() as conn:
            job = await pg.read(conn, job_id)
    elif ctx.db.lite is not None:
        job = await lite.read(ctx.db.lite, job_id)
    else:
        async with ctx.db.reads() as session:
            job = await session.get(ChatJob, job_id)
    if job is None or job.business_id != client.business_id:
        raise NotFound("no such chat job", code="job_not_found")
    return job


async def wait_for(ctx: AppContext, client: Client, job: ChatJob, wait_s: float, *,
                   fresh: bool = False) -> ChatJob:
    done = await ctx.notifier.wait_for(job.id, wait_s, job,
                                       lambda: get_owned(ctx, client, job.id),
                                       lambda j: j.status in TERMINAL, fresh=fresh,
                                       answered=_answered)
    if fresh:  # the request that made the job: its end-to-end time, once
        observability.observe_answered("chat", done)
    return done


def _answered(job: ChatJob, answer: Any) -> ChatJob | None:
    """The job as its completion's wake-up says it is now (app/chat/kind.wake_answer), without
    reading it back. `job` is the waiter's own: it read the job, owner checked (get_owned), or
    wrote it; the answer only adds what the completion wrote."""
    try:
        completed_at = datetime.fromisoformat(answer["completed_at"])
        told = ChatJob(id=job.id, business_id=job.business_id, session_id=job.session_id,
                       prompt=job.prompt, context=job.context, status=JobStatus(answer["status"]),
                       attempts=job.attempts, created_at=job.created_at, model=job.model,
                       options=job.options, response=answer["response"],
                       output_tokens=answer["output_tokens"],
                       finish_reason=answer["finish_reason"], completed_at=completed_at,
                       failure_reason=None, lease_expires_at=None)
    except (KeyError, TypeError, ValueError):
        log.warning("a wake-up carried an answer of another shape; reading the job instead")
        return None
    return told


async def session_messages(ctx: AppContext, client: Client, session_id: str) -> Sequence[ChatLog]:
    async with ctx.db.sessions() as session:
        if not await _session_exists(session, client, session_id):
            raise NotFound("no such chat session", code="session_not_found")
        rows = (await session.execute(
            select(ChatLog).where(ChatLog.session_id == session_id,
                                  ChatLog.business_id.is_not_distinct_from(client.business_id))
            .order_by(ChatLog.id))).scalars().all()
    return rows
