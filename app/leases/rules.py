"""The lease rules, kept in the database (the source of truth) with conditional UPDATEs.

Every state change is one `UPDATE ... WHERE <expected state>`: whichever writer matches the row
wins, the others see zero rows. That is what makes "completed at most once" and "only the current
lease holder" hold across processes, on SQLite and PostgreSQL alike.

A job model used here has: id, status, attempts, lease_id, lease_expires_at, miner_id,
assigned_at, completed_at, failure_reason, returned_by, returned_at.

A delivery that ends without a result (the lease ran out, or the miner gave the job back) is
remembered, every one of them (job_returns; returned_by/returned_at keep the last), and the rule
is: a miner that returned a job may not lease it again for RETURNED_JOB_COOLDOWN_S, and never
for the job's last delivery, which goes to a wallet that has not returned it. Without the
cooldown a wallet took the same job back on every delivery until MAX_ATTEMPTS failed it (a
hoarder in the bench did, 1-11 chats a run); with only the last returner remembered, two wallets
taking turns failed 17 of 20 chats. A job only returners poll for waits for another wallet.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, String, cast, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import observability
from app.models import JobReturn, JobStatus, Miner

Q, A, C, F = JobStatus.queued, JobStatus.assigned, JobStatus.completed, JobStatus.failed


@dataclass(frozen=True)
class Lease:
    job_id: str
    lease_id: str
    expires_at: datetime
    attempt: int
    fields: tuple[Any, ...] = ()  # the `returning` columns asked of acquire(), in that order
    key: Any = None  # the job's primary key


def _current(model: Any, job_id: Any, lease_id: str, miner_id: int, now: datetime) -> list[Any]:
    return [model.id == job_id, model.lease_id == lease_id, model.status == A,
            model.miner_id == miner_id, model.lease_expires_at > now]


def not_returned_by(model: Any, miner_id: int, since: datetime, max_attempts: int) -> Any:
    """The miner may lease the job: it has not given the job back (or let it lapse) since
    `since`, and if it ever did, this is not the job's last delivery. Every return counts, not
    only the last (JobReturn): two wallets taking turns cannot spend a job's deliveries."""
    r = JobReturn
    return ~exists().where(
        r.job_table == model.__tablename__, r.job_id == cast(model.id, String),
        r.miner_id == miner_id,
        or_(r.returned_at > since, model.attempts >= max_attempts - 1))


PUBLIC_RELEASED = ("no miner could answer: the job was given back on its last delivery "
                   "(MAX_ATTEMPTS)")


async def record_returns(session: AsyncSession, model: Any, returns: Sequence[tuple[Any, int]],
                         now: datetime, how: str, reason: str | None = None) -> None:
    """Remember deliveries that ended without a result: (job id, miner id) each."""
    if returns:
        await session.execute(insert(JobReturn.__table__), [
            {"job_table": model.__tablename__, "job_id": str(job_id), "miner_id": miner_id,
             "returned_at": now, "how": how,
             "reason": _truncate(reason) if reason else None}
            for job_id, miner_id in returns])


async def acquire(session: AsyncSession, model: Any, keys: Sequence[Any], miner_id: int,
                  lease_s: int, now: datetime, returning: Sequence[Any] = (),
                  cooldown_s: int = 0, max_attempts: int = 1 << 30) -> list[Lease]:
    """Lease the queued jobs among `keys` to a miner, in one statement; the others (taken,
    finished or unknown) are left alone, and so are those this miner returned within
    cooldown_s, or ever if this is the job's last delivery (not_returned_by()). One lease id covers the jobs of one grant: a
    redelivery always gets a new one, so (job, lease id) still names one delivery.
    `returning` columns come back in Lease.fields, read by the same statement."""
    if not keys:
        return []
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=lease_s)
    condition = model.id == keys[0] if len(keys) == 1 else model.id.in_(keys)
    rows = (await session.execute(
        update(model.__table__).where(condition, model.status == Q,
                                      not_returned_by(model, miner_id,
                                                      now - timedelta(seconds=cooldown_s),
                                                      max_attempts))
        .values(status=A, lease_id=lease_id, lease_expires_at=expires, miner_id=miner_id,
                attempts=model.attempts + 1, assigned_at=now)
        .returning(model.id, model.attempts, *returning, model.created_at))).all()
    order = {key: i for i, key in enumerate(keys)}
    rows.sort(key=lambda r: order.get(r[0], 0))  # in the queue's order
    observability.observe_dispatched(model.__tablename__, now, ((r[1], r[-1], r[0]) for r in rows))
    return [Lease(str(r[0]), lease_id, expires, r[1], tuple(r[2:-1]), r[0]) for r in rows]


async def complete(session: AsyncSession, model: Any, job_id: Any, lease_id: str, miner_id: int,
                   now: datetime, returning: Sequence[Any] = (), **values: Any) -> Row[Any] | None:
    """Complete the job if this is still its current, unexpired lease. The `returning` columns
    (or the id) if this call won, None if it did not."""
    return (await session.execute(
        update(model.__table__).where(*_current(model, job_id, lease_id, miner_id, now))
        .values(status=C, completed_at=now, lease_expires_at=None, **values)
        .returning(*(returning or (model.id,))))).first()


async def extend(session: AsyncSession, model: Any, job_id: Any, lease_id: str, miner_id: int,
                 now: datetime, seconds: int, max_total_s: int) -> datetime | None:
    """The new expiry if the lease is current and stays within max_total_s of its assignment
    (one delivery's whole lease); None otherwise (past_limit() tells the two apart)."""
    expires = now + timedelta(seconds=seconds)
    # assigned_at + max_total >= expires, as a bound computed here: no date arithmetic in SQL,
    # which SQLite and PostgreSQL spell differently
    earliest = expires - timedelta(seconds=max_total_s)
    result = await session.execute(
        update(model).where(*_current(model, job_id, lease_id, miner_id, now),
                            model.assigned_at >= earliest)
        .values(lease_expires_at=expires).returning(model.id)
        .execution_options(synchronize_session=False))
    return expires if result.first() is not None else None


def past_limit(job: Any, lease_id: str, miner_id: int, now: datetime, seconds: int,
               max_total_s: int) -> datetime | None:
    """When a current lease must end if extending it by `seconds` would pass max_total_s (the
    reason an extend() matched no row); None if the lease is not current at all."""
    if (job.status != A or job.lease_id != lease_id or job.miner_id != miner_id
            or job.lease_expires_at is None or job.lease_expires_at <= now
            or job.assigned_at is None):
        return None
    limit = job.assigned_at + timedelta(seconds=max_total_s)
    return limit if now + timedelta(seconds=seconds) > limit else None


async def release(session: AsyncSession, model: Any, job_id: Any, lease_id: str, miner_id: int,
                  now: datetime, max_attempts: int, reason: str) -> str | None:
    """The holder gives the job back: queued again, or failed once attempts are used up. The
    miner's reason is kept with the return, for operators; a failed job shows a fixed one."""
    current = _current(model, job_id, lease_id, miner_id, now)
    requeued = await session.execute(
        update(model).where(*current, model.attempts < max_attempts)
        .values(status=Q, lease_id=None, lease_expires_at=None, miner_id=None,
                returned_by=miner_id, returned_at=now)
        .returning(model.id).execution_options(synchronize_session=False))
    status: str | None = Q if requeued.first() is not None else None
    if status is None:
        failed = await session.execute(
            update(model).where(*current)
            .values(status=F, lease_expires_at=None, completed_at=now,
                    failure_reason=PUBLIC_RELEASED)
            .returning(model.id).execution_options(synchronize_session=False))
        status = F if failed.first() is not None else None
    if status is not None:
        await record_returns(session, model, [(job_id, miner_id)], now, "released", reason)
    return status


async def reap_expired(session: AsyncSession, model: Any, now: datetime,
                       max_attempts: int) -> tuple[list[str], list[str]]:
    """Expired leases: back to the queue, or failed after the last delivery. Returns both id
    lists; every lapse is remembered (record_returns)."""
    expired = [model.status == A, model.lease_expires_at <= now]
    failed = (await session.execute(
        update(model).where(*expired, model.attempts >= max_attempts)
        .values(status=F, lease_expires_at=None, completed_at=now,
                failure_reason=f"no result after {max_attempts} deliveries (lease expired)")
        .returning(model.id, model.miner_id).execution_options(synchronize_session=False))).all()
    requeued = (await session.execute(
        update(model).where(*expired, model.attempts < max_attempts)
        .values(status=Q, lease_id=None, lease_expires_at=None, miner_id=None,
                returned_by=model.miner_id, returned_at=now)  # the old holder, from the row
        .returning(model.id, model.returned_by)
        .execution_options(synchronize_session=False))).all()
    await record_returns(session, model, [(r[0], r[1]) for r in [*failed, *requeued]
                                          if r[1] is not None], now, "lapsed")
    return [str(r[0]) for r in requeued], [str(r[0]) for r in failed]


async def holding(session: AsyncSession, models: Sequence[Any],
                  miner_id: int) -> tuple[int, bool]:
    """(leases the miner holds now over all `models`, whether it is suspended), one statement."""
    held = [select(func.count()).select_from(m).where(m.status == A, m.miner_id == miner_id)
            .scalar_subquery() for m in models]
    row = (await session.execute(
        select(sum(held[1:], held[0]) if held else 0, Miner.suspended_at.is_not(None))
        .where(Miner.id == miner_id))).first()
    return (int(row[0]), bool(row[1])) if row is not None else (0, False)


# A wallet's leasing lock on PostgreSQL: pg_advisory_xact_lock(LEASING_LOCK, miner id), held
# until the transaction that took it ends. The lease statement takes it itself, in
# mia_leases_held() (migration 0017, which spells the same number); lease_lock() takes it for a
# lease written through the ORM, so the two kinds of lease of one wallet wait for each other.
LEASING_LOCK = 1296646476  # "MIAL"


async def lease_lock(session: AsyncSession, miner_id: int) -> None:
    """Wait for the wallet's leasing lock (PostgreSQL), held until the session's transaction ends:
    a room read after it counts every lease of the wallet committed before."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:lock, :wallet)"),
                          {"lock": LEASING_LOCK, "wallet": miner_id})


def holding_sql(tables: Sequence[str]) -> str:
    """holding() as PostgreSQL text for the hot path (asyncpg, $1 the miner id)."""
    held = " + ".join(f"(SELECT count(*) FROM {t} WHERE status = 'assigned' AND miner_id = $1)"
                      for t in tables) or "0"
    return f"SELECT {held} AS held, suspended_at IS NOT NULL AS suspended FROM miners WHERE id = $1"


async def returned_by_miner(session: AsyncSession, model: Any, keys: Sequence[Any],
                            miner_id: int, since: datetime, max_attempts: int) -> list[str]:
    """Those of `keys` still queued that this miner may not lease now (not_returned_by()):
    what acquire() left alone, to put back in the queue for other miners."""
    if not keys:
        return []
    rows = await session.execute(select(model.id).where(
        model.id.in_(keys), model.status == Q,
        ~not_returned_by(model, miner_id, since, max_attempts)))
    return [str(r[0]) for r in rows]


async def returns_of(session: AsyncSession, model: Any, job_id: Any) -> Sequence[JobReturn]:
    """Every delivery of the job that ended without a result, oldest first (operators)."""
    return (await session.execute(select(JobReturn).where(
        JobReturn.job_table == model.__tablename__, JobReturn.job_id == str(job_id))
        .order_by(JobReturn.id))).scalars().all()


async def holders(session: AsyncSession, model: Any,
                  keys: Sequence[Any]) -> dict[Any, tuple[Any, ...]]:
    """Who holds each of these jobs' leases: id -> (status, lease_id, miner_id,
    lease_expires_at), for the jobs that exist; one statement."""
    rows = await session.execute(select(model.id, model.status, model.lease_id, model.miner_id,
                                        model.lease_expires_at).where(model.id.in_(keys)))
    return {r[0]: tuple(r[1:]) for r in rows}


def holders_sql(table: str, extra: str | None = None) -> str:
    """holders() as PostgreSQL text for the hot path ($1 the ids, as an array), with `extra`
    (an SQL expression named `extra`) as a sixth column if given."""
    more = f", {extra} AS extra" if extra else ""
    return (f"SELECT id, status, lease_id, miner_id, lease_expires_at{more} FROM {table} "
            f"WHERE id = ANY($1)")


def holder_sql(table: str, extra: Sequence[str] = ()) -> str:
    """Who holds a job's lease, since and until when, and the `extra` columns, as PostgreSQL
    text ($1 the job's id): what a chunk post checks (times come back naive UTC, as stored)."""
    columns = ", ".join(["status", "lease_id", "miner_id", "lease_expires_at", "assigned_at",
                         *extra])
    return f"SELECT {columns} FROM {table} WHERE id = $1"


async def take_back(session: AsyncSession, model: Any, miner_id: int) -> list[str]:
    """Every lease the miner holds, back to the queue at once (its ids returned, to push to the
    front after commit). The delivery is not counted against the job: attempts go back down."""
    rows = await session.execute(
        update(model).where(model.status == A, model.miner_id == miner_id)
        .values(status=Q, lease_id=None, lease_expires_at=None, miner_id=None,
                attempts=model.attempts - 1)
        .returning(model.id).execution_options(synchronize_session=False))
    return [str(r[0]) for r in rows]


async def queued_ids(session: AsyncSession, model: Any, created_before: datetime,
                     limit: int = 10_000) -> Sequence[str]:
    rows = await session.execute(
        select(model.id).where(model.status == Q, model.created_at <= created_before)
        .order_by(model.created_at).limit(limit))
    return [str(r[0]) for r in rows]


def _truncate(text: str, n: int = 500) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
