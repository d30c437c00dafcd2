"""Erasing a business's customer content (GDPR art. 17): one session on the business's request
(DELETE /chat/sessions/{id}), content past its retention period (the worker), or everything of a
business an operator removes (DELETE /businesses/{id}).

Where content lives, and what erasing does there:
- chat_logs (every user and assistant turn, earlier turns a /v1 request brought): deleted.
- chat_jobs (prompt, context, response, options, the miner's signature over the response):
  emptied; the row stays with what billing needs (ids, business, key, model, status, token
  counts, hold, times). Its session_id, a name the business chose (it may name a person), is
  replaced by the tombstone `erased#<erasure id>` ('#' is not allowed in session ids, so no
  live session can share it); erased_at says when.
- verification copies (app/trust/checkjobs.py: chat_jobs rows with origin_job_id, and their
  own chat_logs history): erased with the job they copy, cancelled if still in flight.
- chat_sessions: the session's row is deleted (the name is in it).
- feedback.comment: emptied (the rating stays: it is part of a miner's reputation);
  job_returns.reason (a miner's words about the job): emptied; idempotency_keys naming the job
  (the business's key and a hash of the request body): deleted.
- idle_jobs (prompt, result, signature): emptied like chat jobs (retention, business removal).
- Redis: the queue lists hold job ids only, but a cancelled job's id is taken out of them; the
  stream buffers (app/relay.py, the text a miner streamed) of every erased job that may still
  have one are deleted; the trust check set and exclusions forget the job's copies.
  Nothing else in Redis holds content (arq tasks, wake-ups and caches carry ids only).

A job of the session still queued or leased is cancelled first, in the same transaction: one
conditional UPDATE to `failed` with failure_reason "erased", its hold released
(ledger.release_job). A miner's late result then matches no current lease (completing requires
status `assigned`, app/leases/rules.py) and is answered 409 job_failed; nothing is stored.

Every erasure writes one Erasure row: who, what scope, when, how much; the session only as
SHA-256, never the content. Deleted bytes: SQLite zeroes them (PRAGMA secure_delete, app/db.py);
PostgreSQL keeps dead row versions in its files until VACUUM reclaims them (pg_dump never shows
them); README "Customer data" says so.

Functions here take the caller's session and only flush, except remove_business (and
app/accounts/retention.py), which run their own short transactions in batches.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import ledger
from app.auth import cache as auth_cache
from app.context import AppContext
from app.db import after_commit
from app.errors import NotFound
from app.models import (ApiKey, Business, ChatJob, ChatLog, ChatSession, Erasure, Feedback,
                        IdempotencyKey, IdleJob, JobReturn, JobStatus, utcnow)
from app.trust.checkjobs import excluded_key

log = logging.getLogger(__name__)

ERASED = "erased"  # failure_reason of a job cancelled because its content was erased
BATCH = 500  # rows per statement (SQLite's bound parameters) and per retention transaction
IN_FLIGHT = (JobStatus.queued, JobStatus.assigned)
IDLE_IN_FLIGHT = (JobStatus.queued, JobStatus.assigned, JobStatus.processing)
TERMINAL = (JobStatus.completed, JobStatus.failed)


def subject_hash(session_id: str) -> str:
    """What an Erasure keeps of the session it erased: SHA-256 hex of its id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def tombstone(erasure_id: int) -> str:
    """The session_id an erased job keeps: which erasure emptied it, not the name."""
    return f"erased#{erasure_id}"


@dataclass
class Swept:
    """What one step erased, and what Redis must forget once it has committed."""
    jobs: int = 0
    messages: int = 0
    cancelled: int = 0
    cancelled_ids: list[str] = field(default_factory=list)  # out of the queue lists
    idle_cancelled_ids: list[str] = field(default_factory=list)
    buffered_ids: list[str] = field(default_factory=list)  # may still have a stream buffer
    check_ids: list[str] = field(default_factory=list)  # verification copies

    def add(self, other: Swept) -> None:
        for name in ("jobs", "messages", "cancelled"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("cancelled_ids", "idle_cancelled_ids", "buffered_ids", "check_ids"):
            getattr(self, name).extend(getattr(other, name))

    @property
    def anything(self) -> bool:
        return bool(self.jobs or self.messages or self.cancelled)


def of_business(column: Any, business_id: int | None) -> Any:
    """`column` names this business (None: no business), in a form an index can serve."""
    return column.is_(None) if business_id is None else column == business_id


def _chunks(items: Sequence[Any], n: int = BATCH) -> list[Sequence[Any]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


async def new_erasure(session: AsyncSession, *, business_id: int | None, scope: str,
                       actor: str, now: datetime, subject: str | None = None,
                       before: datetime | None = None) -> int:
    result = await session.execute(insert(Erasure).values(
        business_id=business_id, scope=scope, actor=actor[:100], created_at=now, before=before,
        subject_hash=subject_hash(subject) if subject is not None else None,
        jobs=0, messages=0, cancelled=0).returning(Erasure.id))
    return int(result.scalar_one())


async def add_counts(session: AsyncSession, erasure_id: int, swept: Swept) -> None:
    """Add a step's counts to its Erasure, in SQL (steps of one erasure may run in turns)."""
    if swept.anything:
        await session.execute(update(Erasure).where(Erasure.id == erasure_id).values(
            jobs=Erasure.jobs + swept.jobs, messages=Erasure.messages + swept.messages,
            cancelled=Erasure.cancelled + swept.cancelled)
            .execution_options(synchronize_session=False))


def _buffer_window(c: AppContext, now: datetime) -> datetime:
    """A job assigned before this has no stream buffer left: a buffer expires at its lease's
    hard end (at most LEASE_MAX_TOTAL_S after assignment) plus STREAM_BUFFER_TTL_S."""
    s = c.settings
    return now - timedelta(seconds=s.lease_max_total_s + s.stream_buffer_ttl_s + 60)


async def erase_chat_jobs(session: AsyncSession, c: AppContext, ids: Sequence[str],
                          erasure_id: int, now: datetime) -> Swept:
    """Erase these chat jobs and their verification copies: in-flight ones cancelled (holds
    released), content emptied, their turns deleted. Counts the business's jobs, the cancelled
    ones and their turns (a copy's are not counted); turns without a job (earlier turns a /v1
    request brought) are the caller's to delete."""
    swept = Swept()
    for part in _chunks(list(ids)):
        copies = (await session.execute(select(ChatJob.id, ChatJob.session_id).where(
            ChatJob.origin_job_id.in_(part), ChatJob.erased_at.is_(None)))).all()
        copy_ids = [r.id for r in copies]
        every = [*part, *copy_ids]
        cancelled = (await session.execute(
            update(ChatJob).where(ChatJob.id.in_(every), ChatJob.status.in_(IN_FLIGHT))
            .values(status=JobStatus.failed, failure_reason=ERASED, completed_at=now,
                    lease_expires_at=None)
            .returning(ChatJob.id, ChatJob.business_id, ChatJob.purpose)
            .execution_options(synchronize_session=False))).all()
        for row in cancelled:
            if row.business_id is not None:
                await ledger.release_job(session, ledger.JobRef("chat", row.id), now=now,
                                         note="cancelled: content erased")
        swept.cancelled += sum(1 for r in cancelled if r.purpose is None)
        swept.cancelled_ids += [r.id for r in cancelled]
        erased = (await session.execute(
            update(ChatJob).where(ChatJob.id.in_(every), ChatJob.erased_at.is_(None))
            .values(prompt="", context=None, response=None, options=None, signature=None,
                    session_id=tombstone(erasure_id), erased_at=now)
            .returning(ChatJob.id, ChatJob.assigned_at, ChatJob.purpose)
            .execution_options(synchronize_session=False))).all()
        swept.jobs += sum(1 for r in erased if r.purpose is None)
        window = _buffer_window(c, now)
        swept.buffered_ids += [r.id for r in erased
                               if r.assigned_at is not None and r.assigned_at >= window]
        swept.check_ids += copy_ids
        turns = await session.execute(delete(ChatLog).where(ChatLog.job_id.in_(part))
                                      .execution_options(synchronize_session=False))
        swept.messages += turns.rowcount or 0
        if copy_ids:
            await session.execute(delete(ChatLog).where(ChatLog.job_id.in_(copy_ids))
                                  .execution_options(synchronize_session=False))
        copy_sessions = [r.session_id for r in copies]
        if copy_sessions:  # a copy's history: turns of a session of its own, no business
            await session.execute(delete(ChatLog).where(
                ChatLog.session_id.in_(copy_sessions), ChatLog.business_id.is_(None))
                .execution_options(synchronize_session=False))
        await session.execute(update(Feedback).where(Feedback.job_id.in_(every))
                              .values(comment=None).execution_options(synchronize_session=False))
        await session.execute(update(JobReturn).where(
            JobReturn.job_table == ChatJob.__tablename__, JobReturn.job_id.in_(every))
            .values(reason=None).execution_options(synchronize_session=False))
        await session.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id.in_(part))
                              .execution_options(synchronize_session=False))
    return swept


async def erase_idle_jobs(session: AsyncSession, ids: Sequence[int], now: datetime) -> Swept:
    """Erase these idle jobs: in-flight ones (queued, leased, at RunPod) cancelled with their
    holds released, prompt and result emptied. Their revenue and ledger entries stay."""
    swept = Swept()
    for part in _chunks(list(ids)):
        cancelled = (await session.execute(
            update(IdleJob).where(IdleJob.id.in_(part), IdleJob.status.in_(IDLE_IN_FLIGHT))
            .values(status=JobStatus.failed, failure_reason=ERASED, completed_at=now,
                    lease_expires_at=None)
            .returning(IdleJob.id).execution_options(synchronize_session=False))).all()
        for (job_id,) in cancelled:
            await ledger.release_job(session, ledger.JobRef("idle", str(job_id)), now=now,
                                     note="cancelled: content erased")
        swept.cancelled += len(cancelled)
        swept.idle_cancelled_ids += [str(r[0]) for r in cancelled]
        erased = await session.execute(
            update(IdleJob).where(IdleJob.id.in_(part), IdleJob.erased_at.is_(None))
            .values(prompt="", result=None, signature=None, erased_at=now)
            .execution_options(synchronize_session=False))
        swept.jobs += erased.rowcount or 0
        await session.execute(update(JobReturn).where(
            JobReturn.job_table == IdleJob.__tablename__,
            JobReturn.job_id.in_([str(i) for i in part]))
            .values(reason=None).execution_options(synchronize_session=False))
        await session.execute(delete(IdempotencyKey).where(
            IdempotencyKey.job_id.in_([str(i) for i in part]))
            .execution_options(synchronize_session=False))
    return swept


def forget_after_commit(session: AsyncSession, c: AppContext, swept: Swept) -> None:
    """Once the erasure has committed: Redis lets go of the erased jobs."""
    if swept.cancelled_ids or swept.idle_cancelled_ids or swept.buffered_ids or swept.check_ids:
        after_commit(session, lambda: forget_in_redis(c, swept),
                     what="erasing jobs' queue entries and stream buffers")


async def forget_in_redis(c: AppContext, swept: Swept) -> None:
    """Queue entries of cancelled jobs, stream buffers, check bookkeeping; waiters woken. Best
    effort: if Redis fails, a buffer still expires on its own (STREAM_BUFFER_TTL_S past its
    lease) and queue entries are ids only, skipped by miners (the job is not queued)."""
    try:
        for kind, ids in (("chat", swept.cancelled_ids), ("idle", swept.idle_cancelled_ids)):
            if not ids:
                continue
            lists = [c.queue.key(kind)] + [c.queue.key(kind, m) for m in await c.queue.models(kind)]
            for key in lists:
                for job_id in ids:
                    await c.redis.lrem(key, 0, job_id)
        for job_id in dict.fromkeys(swept.buffered_ids + swept.cancelled_ids):
            await c.relay.forget(job_id)
        if swept.check_ids:
            await c.redis.hdel(excluded_key(c), *swept.check_ids)
        woken = swept.cancelled_ids + swept.idle_cancelled_ids
        if woken:  # a client waiting on one hears it failed
            await c.queue.publish_done(*woken)
    except Exception as exc:  # noqa: BLE001 - see the docstring: nothing is lost, it expires
        log.warning("erasure: Redis could not forget %d job(s) (%s); stream buffers expire "
                    "on their own", len(swept.buffered_ids), type(exc).__name__)


# ------------------------------------------------------------------ one session


@dataclass(frozen=True)
class Done:
    erasure_id: int
    jobs: int
    messages: int
    cancelled: int
    at: datetime


async def erase_session(session: AsyncSession, c: AppContext, business_id: int,
                        session_id: str, actor: str, now: datetime | None = None) -> Done:
    """Erase one of the business's sessions (404 if it has none of that name): every turn,
    every job's content, its in-flight jobs cancelled. Runs in the caller's transaction."""
    now = now or utcnow()
    # the session's row first (locked on PostgreSQL): a concurrent first message waits for it
    known = (await session.execute(select(ChatSession.id).where(
        ChatSession.business_id == business_id, ChatSession.session_id == session_id)
        .with_for_update())).first()
    jobs = list((await session.execute(select(ChatJob.id).where(
        ChatJob.business_id == business_id, ChatJob.session_id == session_id)
        .order_by(ChatJob.id))).scalars().all())
    if known is None and not jobs:
        raise NotFound("no such chat session", code="session_not_found")
    erasure_id = await new_erasure(session, business_id=business_id, scope="session",
                                    actor=actor, now=now, subject=session_id)
    swept = await erase_chat_jobs(session, c, jobs, erasure_id, now)
    turns = await session.execute(delete(ChatLog).where(
        ChatLog.business_id == business_id, ChatLog.session_id == session_id)
        .execution_options(synchronize_session=False))
    swept.messages += turns.rowcount or 0
    await session.execute(delete(ChatSession).where(
        ChatSession.business_id == business_id, ChatSession.session_id == session_id)
        .execution_options(synchronize_session=False))
    await add_counts(session, erasure_id, swept)
    forget_after_commit(session, c, swept)
    return Done(erasure_id, swept.jobs, swept.messages, swept.cancelled, now)


# ------------------------------------------------------------------ a whole business


@dataclass(frozen=True)
class Removed:
    business_id: int
    removed_at: datetime
    keys_revoked: int
    erasure: Erasure  # its record, with the counts of every call so far


async def remove_business(c: AppContext, business_id: int, actor: str) -> Removed:
    """An operator removes a business: its keys revoked at once, its in-flight jobs cancelled
    (holds released), removed_at set and its contacts cleared, then all its content erased in
    batches of short transactions. Idempotent: a second call finishes what a first one left (a
    crash between batches) and changes nothing else. Its name, ledger, balance and deposits stay
    untouched."""
    now = utcnow()
    async with c.db.transaction() as session:
        business = (await session.execute(select(Business.id, Business.removed_at).where(
            Business.id == business_id).with_for_update())).first()
        if business is None:
            raise NotFound("no such business", code="business_not_found")
        removed_at = business.removed_at or now
        # its contacts are a person's email and phone: they go with the content (the name stays,
        # the ledger's and the listing's handle on the account)
        await session.execute(update(Business).where(Business.id == business_id)
                              .values(removed_at=removed_at, contact_email=None,
                                      contact_phone=None)
                              .execution_options(synchronize_session=False))
        revoked = await session.execute(update(ApiKey).where(
            ApiKey.business_id == business_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now).execution_options(synchronize_session=False))
        keys_revoked = revoked.rowcount or 0
        erasure_id = (await session.execute(select(Erasure.id).where(
            Erasure.business_id == business_id, Erasure.scope == "business")
            .order_by(Erasure.id.desc()).limit(1))).scalar()
        if erasure_id is None:
            erasure_id = await new_erasure(session, business_id=business_id,
                                            scope="business", actor=actor, now=now)
        # cancelled now, so no miner's answer lands after the removal
        in_flight = (await session.execute(select(ChatJob.id).where(
            ChatJob.business_id == business_id, ChatJob.status.in_(IN_FLIGHT)))).scalars().all()
        idle_in_flight = (await session.execute(select(IdleJob.id).where(
            IdleJob.business_id == business_id, IdleJob.status.in_(IDLE_IN_FLIGHT)))
        ).scalars().all()
        swept = await erase_chat_jobs(session, c, list(in_flight), erasure_id, now)
        swept.add(await erase_idle_jobs(session, list(idle_in_flight), now))
        await add_counts(session, erasure_id, swept)
        forget_after_commit(session, c, swept)
        if keys_revoked:
            after_commit(session, lambda: auth_cache.announce_revocation(c),
                         what="announcing revoked keys")
    await _erase_all_of(c, business_id, erasure_id, now)
    async with c.db.reads() as session:
        record = (await session.execute(select(Erasure).where(Erasure.id == erasure_id))
                  ).scalar_one()
    return Removed(business_id, removed_at, keys_revoked, record)


async def _erase_all_of(c: AppContext, business_id: int, erasure_id: int,
                        now: datetime) -> Swept:
    """Everything of a removed business not yet erased, in batches (one transaction each)."""
    total = Swept()
    while True:  # chat jobs
        async with c.db.transaction() as session:
            ids = (await session.execute(select(ChatJob.id).where(
                ChatJob.business_id == business_id, ChatJob.erased_at.is_(None))
                .order_by(ChatJob.id).limit(BATCH))).scalars().all()
            if not ids:
                break
            swept = await erase_chat_jobs(session, c, list(ids), erasure_id, now)
            await add_counts(session, erasure_id, swept)
            forget_after_commit(session, c, swept)
        total.add(swept)
    while True:  # idle jobs
        async with c.db.transaction() as session:
            idle = (await session.execute(select(IdleJob.id).where(
                IdleJob.business_id == business_id, IdleJob.erased_at.is_(None))
                .order_by(IdleJob.id).limit(BATCH))).scalars().all()
            if not idle:
                break
            swept = await erase_idle_jobs(session, list(idle), now)
            await add_counts(session, erasure_id, swept)
            forget_after_commit(session, c, swept)
        total.add(swept)
    total.add(await delete_turns(c, ChatLog.business_id == business_id, erasure_id))
    async with c.db.transaction() as session:
        await session.execute(delete(ChatSession).where(ChatSession.business_id == business_id)
                              .execution_options(synchronize_session=False))
        await session.execute(update(Feedback).where(Feedback.business_id == business_id)
                              .values(comment=None).execution_options(synchronize_session=False))
        await session.execute(delete(IdempotencyKey).where(
            IdempotencyKey.business_id == business_id)
            .execution_options(synchronize_session=False))
    return total


async def delete_turns(c: AppContext, condition: Any, erasure_id: int) -> Swept:
    """chat_logs rows matching `condition`, deleted BATCH at a time, counted on the erasure."""
    total = Swept()
    while True:
        async with c.db.transaction() as session:
            ids = (await session.execute(select(ChatLog.id).where(condition)
                                         .order_by(ChatLog.id).limit(BATCH))).scalars().all()
            if not ids:
                break
            deleted = await session.execute(delete(ChatLog).where(ChatLog.id.in_(ids))
                                            .execution_options(synchronize_session=False))
            step = Swept(messages=deleted.rowcount or 0)
            await add_counts(session, erasure_id, step)
        total.add(step)
    return total


# ------------------------------------------------------------------ the record


async def erasures_of(session: AsyncSession, business_id: int, limit: int = 100,
                      before_id: int | None = None) -> Sequence[Erasure]:
    """The business's erasures, newest first (keyset: those with an id below before_id)."""
    query = select(Erasure).where(Erasure.business_id == business_id)
    if before_id is not None:
        query = query.where(Erasure.id < before_id)
    return (await session.execute(query.order_by(Erasure.id.desc()).limit(limit))).scalars().all()


async def business_exists(session: AsyncSession, business_id: int) -> bool:
    return (await session.execute(select(Business.id).where(Business.id == business_id))
            ).first() is not None


async def actor_of_key(session: AsyncSession, api_key_id: int | None) -> str:
    """How an erasure a business asked for names who asked: its key's prefix."""
    prefix = (await session.execute(select(ApiKey.prefix).where(ApiKey.id == api_key_id))
              ).scalar() if api_key_id is not None else None
    return f"key:{prefix}" if prefix else "key:unknown"

