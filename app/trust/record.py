"""What anyone may see of the checks: a wallet's record (GET /miners/{address}) and the
network's figures (/network): the score distribution and the checks run per hour."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from app.context import AppContext
from app.errors import NotFound
from app.models import Miner, TrustCheck, utcnow
from app.trust.reputation import KINDS
from app.trust.standing import on_probation, score

SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # upper bounds


async def miner_record(c: AppContext, address: str) -> dict[str, Any]:
    async with c.db.reads() as session:
        miner = (await session.execute(select(Miner).where(Miner.address == address))).scalar()
        if miner is None:
            raise NotFound("no miner has this address", code="miner_not_found")
        rows = (await session.execute(
            select(TrustCheck.kind, TrustCheck.passed, func.count())
            .where(TrustCheck.miner_id == miner.id)
            .group_by(TrustCheck.kind, TrustCheck.passed))).all()
        last_day = (await session.execute(
            select(TrustCheck.passed, func.count())
            .where(TrustCheck.miner_id == miner.id,
                   TrustCheck.created_at >= utcnow() - timedelta(days=1))
            .group_by(TrustCheck.passed))).all()
    by_kind = {k: {"passed": 0, "failed": 0} for k in KINDS}
    for kind, passed, n in rows:
        by_kind.setdefault(kind, {"passed": 0, "failed": 0})["passed" if passed else "failed"] += n
    day = {"passed": 0, "failed": 0}
    for passed, n in last_day:
        day["passed" if passed else "failed"] += n
    return {
        "address": miner.address,
        "jobs_done": miner.job_count,
        "tokens_generated": miner.tokens_generated,
        "checks": {"passed": sum(v["passed"] for v in by_kind.values()),
                   "failed": sum(v["failed"] for v in by_kind.values()),
                   "by_kind": by_kind, "last_24h": day},
        "score": round(score(miner.rep_passed or 0.0, miner.rep_failed or 0.0), 4),
        "probation": on_probation(c.settings, miner.address, miner.graduated_at is not None),
        "graduated_at": miner.graduated_at,
        "suspended": miner.suspended_at is not None,
        "suspended_at": miner.suspended_at,
        "suspended_reason": miner.suspended_reason if miner.suspended_at is not None else None,
    }


async def network_summary(c: AppContext) -> dict[str, Any]:
    """Scores of the wallets (how many in each tenth), and checks per hour over the last day."""
    async with c.db.reads() as session:
        reps = (await session.execute(select(Miner.rep_passed, Miner.rep_failed)
                                      .where(Miner.suspended_at.is_(None)))).all()
        suspended = (await session.execute(select(func.count()).select_from(Miner).where(
            Miner.suspended_at.is_not(None)))).scalar_one()
        since = utcnow() - timedelta(hours=24)
        checks = (await session.execute(
            select(TrustCheck.created_at, TrustCheck.kind, TrustCheck.passed)
            .where(TrustCheck.created_at >= since))).all()
    buckets = [0] * len(SCORE_BUCKETS)
    for passed, failed in reps:
        value = score(passed or 0.0, failed or 0.0)
        buckets[min(int(value * 10), 9)] += 1
    hours: dict[str, dict[str, int]] = {}
    for at, kind, passed in checks:
        hour = at.replace(minute=0, second=0, microsecond=0).isoformat()
        slot = hours.setdefault(hour, {"passed": 0, "failed": 0})
        slot["passed" if passed else "failed"] += 1
    last_hour = sum(1 for at, _, _ in checks if at >= utcnow() - timedelta(hours=1))
    return {
        "score_distribution": [{"below": b, "miners": n}
                               for b, n in zip(SCORE_BUCKETS, buckets, strict=True)],
        "miners_suspended": int(suspended),
        "checks_last_hour": last_hour,
        "checks_per_hour": [{"hour": h, **v} for h, v in sorted(hours.items())],
    }
