"""What the database says after a run: dispatch latency, and whether every job is accounted for.

Dispatch latency is assigned_at - created_at of each chat job, both stamped by the server's own
clock, so it needs no clock shared with the load generator; a business's jobs and trust's check
copies (issue 18: verification copies and canaries, which wallets pop only after the business's
lists) apart, since the copies wait by design.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from app.db import Database
from app.models import ChatJob, ChatLog, JobStatus, Miner, TrustCheck


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def dispatch_ms(database_url: str, start: float, end: float
                      ) -> tuple[list[float], list[float]]:
    """Dispatch latencies of the chat jobs created in [start, end]: (a business's, check copies')."""
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            rows = (await session.execute(
                select(ChatJob.created_at, ChatJob.assigned_at, ChatJob.purpose)
                .where(ChatJob.created_at >= _utc(start), ChatJob.created_at <= _utc(end),
                       ChatJob.assigned_at.is_not(None)))).all()
    finally:
        await db.dispose()
    business = [(a - c).total_seconds() * 1000 for c, a, purpose in rows if purpose is None]
    checks = [(a - c).total_seconds() * 1000 for c, a, purpose in rows if purpose is not None]
    return business, checks


async def settle(database_url: str, timeout_s: float) -> int:
    """Wait until no chat job (a business's or an issue-18 check job) is queued or leased;
    returns how many still are at the timeout."""
    db = Database(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with db.sessions() as session:
                open_jobs = (await session.execute(
                    select(func.count()).select_from(ChatJob)
                    .where(ChatJob.status.in_((JobStatus.queued, JobStatus.assigned))))).scalar_one()
            if open_jobs == 0 or time.monotonic() > deadline:
                return int(open_jobs)
            await asyncio.sleep(0.5)
    finally:
        await db.dispose()


async def audit(database_url: str, client_job_ids: set[str]) -> dict[str, Any]:
    """Every business's chat accounted for: terminal, answered once, failures explained, miners
    credited (for check jobs too, which are credited like other work and left out of the rest)."""
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            by_status = dict((await session.execute(
                select(ChatJob.status, func.count()).where(ChatJob.purpose.is_(None))
                .group_by(ChatJob.status))).all())
            checks_open = (await session.execute(
                select(func.count()).select_from(ChatJob).where(
                    ChatJob.purpose.is_not(None),
                    ChatJob.status.in_((JobStatus.queued, JobStatus.assigned))))).scalar_one()
            # Credited: each job a wallet answered on its lease (a check job too; not a business
            # job answered by agreement, which was never leased: its check jobs were credited),
            # less one per failed check (the credit it forfeits).
            leased_answers = (await session.execute(
                select(func.count()).select_from(ChatJob).where(
                    ChatJob.status == JobStatus.completed, ChatJob.assigned_at.is_not(None))
            )).scalar_one()
            forfeited = (await session.execute(
                select(func.count()).select_from(TrustCheck).where(
                    TrustCheck.passed.is_(False), TrustCheck.kind != "feedback"))).scalar_one()
            failed_silently = (await session.execute(
                select(func.count()).select_from(ChatJob).where(
                    ChatJob.status == JobStatus.failed, ChatJob.failure_reason.is_(None)))).scalar_one()
            answers = (select(ChatLog.job_id, func.count().label("n"))
                       .where(ChatLog.role == "assistant").group_by(ChatLog.job_id).subquery())
            answered_twice = (await session.execute(
                select(func.count()).select_from(answers).where(answers.c.n > 1))).scalar_one()
            completed_unanswered = (await session.execute(
                select(func.count()).select_from(ChatJob)
                .outerjoin(answers, answers.c.job_id == ChatJob.id)
                .where(ChatJob.status == JobStatus.completed, answers.c.n.is_(None),
                       ChatJob.purpose.is_(None)))).scalar_one()
            credited = (await session.execute(select(func.coalesce(func.sum(Miner.job_count), 0))))
            credited_jobs = int(credited.scalar_one())
            known: set[str] = set()
            ids = sorted(client_job_ids)
            for i in range(0, len(ids), 5000):
                known.update((await session.execute(
                    select(ChatJob.id).where(ChatJob.id.in_(ids[i:i + 5000])))).scalars())
    finally:
        await db.dispose()
    statuses = {str(getattr(k, "value", k)): int(v) for k, v in by_status.items()}
    completed = statuses.get("completed", 0)
    return {
        "jobs": sum(statuses.values()), "by_status": statuses,
        "lost": statuses.get("queued", 0) + statuses.get("assigned", 0)
        + len(client_job_ids - known),
        "duplicated": int(answered_twice),
        "completed_without_answer": int(completed_unanswered),
        "failed_without_reason": int(failed_silently),
        "miner_credits_match": credited_jobs == leased_answers - forfeited,
        "miner_credited_jobs": credited_jobs,
        "check_jobs_open": int(checks_open),
    }


async def hoarded(database_url: str, grants: dict[str, int],
                  addresses: list[str]) -> dict[str, Any]:
    """What became of the jobs hoarders held (`grants`: job id -> leases they got of it):
    answered by an honest miner (every one should be), by a hoarder (never: they do not
    answer), failed (with the reasons, and how many of each one's deliveries went to
    hoarders), still open, or unknown."""
    db = Database(database_url)
    out: dict[str, Any] = {"held": len(grants), "held_twice_or_more": sum(
        1 for n in grants.values() if n > 1), "completed_by_honest": 0,
        "completed_by_hoarder": 0, "failed": 0, "open": 0, "unknown": 0, "check_jobs_held": 0,
        "failures": {}}
    try:
        async with db.sessions() as session:
            hoarders = set((await session.execute(
                select(Miner.id).where(Miner.address.in_(addresses)))).scalars())
            ids = sorted(grants)
            seen = 0
            for i in range(0, len(ids), 5000):
                for job_id, status, miner_id, reason, purpose in (await session.execute(
                        select(ChatJob.id, ChatJob.status, ChatJob.miner_id,
                               ChatJob.failure_reason, ChatJob.purpose)
                        .where(ChatJob.id.in_(ids[i:i + 5000])))).all():
                    seen += 1
                    if purpose is not None:  # an issue-18 check job (a shadow copy, a re-run)
                        out["check_jobs_held"] += 1
                    if status == JobStatus.completed:
                        out["completed_by_hoarder" if miner_id in hoarders
                            else "completed_by_honest"] += 1
                    elif status == JobStatus.failed:
                        out["failed"] += 1
                        why = f"{reason} (hoarded {grants[job_id]}x)"
                        out["failures"][why] = out["failures"].get(why, 0) + 1
                    else:
                        out["open"] += 1
    finally:
        await db.dispose()
    out["unknown"] = len(grants) - seen
    return out
