"""A wallet's record: each check is a row of trust_checks, and its miners row keeps the running
reputation, updated by one UPDATE per check (never read-modify-write in Python):

    rep_passed <- rep_passed x (1 - REPUTATION_DECAY) + weight       if it passed
    rep_failed <- rep_failed x (1 - REPUTATION_DECAY) + weight x W   if it failed
    score      =  (1 + rep_passed) / (2 + rep_passed + rep_failed)

the mean of a Beta posterior whose older evidence fades with each newer check (with the default
0.02, a check's weight halves after ~34 newer ones). W is REPUTATION_FAIL_WEIGHT (20) for a
failed work check (verify, canary, rescore) and 1 for a business's rating (FEEDBACK_WEIGHT is
its whole weight): an answer outvoted by two other wallets, or far from a canary's reference, is
strong evidence, a pass is weak (a sleeper passes on purpose). With W = 20 a wallet that just
graduated (10 passes) survives one failed check (score 0.32); one with 40 passes behind it is
suspended at its fourth failure in a row (with W = 1: its 43rd), one with the most passes decay
allows (~50) at its sixth.

A failed work check of a graduated wallet sends it back to probation at once (graduated_at
cleared in the same transaction, its leases returned, every process told): its answers stop
reaching businesses, it gets check and shadow work only, where a cheater keeps failing and is
suspended.
It graduates again once it has passed PROBATION_JOBS work checks since its last failed one
(counted from trust_checks inside the graduating UPDATE). TRUSTED_MINERS are never sent back
(the operator vouches for them; a low score still suspends them). A business's rating is no
check of the work: it moves the score a little, never demotes and never counts toward
graduation (a Sybil's own business could rate its wallet up).

A failed check forfeits the credit of the job it judged (one job and its tokens off the
wallet's counters). A score below REPUTATION_SUSPEND_BELOW after a failed check suspends the
wallet (the existing suspension: its leases go back to the queue at once, 403
miner_suspended), with the reason recorded; an operator lifts it with
POST /miners/{address}/unsuspend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import cache as auth_cache
from app.context import AppContext
from app.db import after_commit
from app.leases.protocol import take_back_all
from app.models import Miner, TrustCheck
from app.trust import pg as trust_pg
from app.trust import standing

log = logging.getLogger(__name__)
KINDS = ("verify", "canary", "feedback", "rescore")


@dataclass(frozen=True)
class Outcome:
    score: float
    suspended: bool  # by this check
    graduated: bool  # by this check
    demoted: bool = False  # by this check: a graduated wallet back on probation


async def record(session: AsyncSession, c: AppContext, *, miner_id: int, kind: str,
                 passed: bool, job_id: str | None, now: datetime, weight: float = 1.0,
                 similarity: float | None = None, forfeit_tokens: int | None = None,
                 detail: str | None = None) -> Outcome:
    """One check of the wallet, in the caller's transaction. forfeit_tokens (a failed check's
    job's tokens, None: nothing to forfeit) comes off its credit with one job."""
    if kind not in KINDS:
        raise ValueError(f"unknown check kind {kind!r}")
    s = c.settings
    keep = 1.0 - s.reputation_decay
    forfeit = forfeit_tokens is not None and not passed
    work = kind != "feedback"  # a check of the work itself, not a business's opinion
    if work and not passed:
        weight *= s.reputation_fail_weight
    await session.execute(insert(TrustCheck.__table__).values(
        miner_id=miner_id, kind=kind, passed=passed, job_id=job_id, weight=weight,
        similarity=similarity, tokens_forfeited=(forfeit_tokens or 0) if forfeit else 0,
        detail=(detail or "")[:300] or None, created_at=now))
    judged = 1 if work else 0
    values: dict[str, object] = dict(
        rep_passed=Miner.rep_passed * keep + (weight if passed else 0.0),
        rep_failed=Miner.rep_failed * keep + (0.0 if passed else weight),
        checks_passed=Miner.checks_passed + (judged if passed else 0),
        checks_failed=Miner.checks_failed + (0 if passed else judged))
    if forfeit:
        values.update(job_count=Miner.job_count - 1,
                      tokens_generated=Miner.tokens_generated - (forfeit_tokens or 0))
    row = (await session.execute(
        update(Miner.__table__).where(Miner.id == miner_id).values(**values)
        .returning(Miner.rep_passed, Miner.rep_failed, Miner.checks_passed, Miner.suspended_at,
                   Miner.graduated_at, Miner.address))).first()
    if row is None:
        return Outcome(0.5, False, False)
    now_score = standing.score(row.rep_passed, row.rep_failed)
    suspended = graduated = demoted = False
    if not passed and row.suspended_at is None and now_score < s.reputation_suspend_below:
        reason = (f"reputation {now_score:.2f} fell below REPUTATION_SUSPEND_BELOW="
                  f"{s.reputation_suspend_below} after a failed {kind} check"
                  + (f" of job {job_id}" if job_id else "") + (f": {detail}" if detail else ""))
        await session.execute(update(Miner.__table__).where(
            Miner.id == miner_id, Miner.suspended_at.is_(None))
            .values(suspended_at=now, suspended_reason=reason[:500]))
        returned = await take_back_all(session, c, miner_id)
        after_commit(session, lambda: _forget_sessions(c),
                     what="announcing a suspension by reputation")
        log.warning("miner %d (%s) suspended: %s; %d lease(s) returned", miner_id, row.address,
                    reason, returned)
        suspended = True
    elif passed and work and row.graduated_at is None and s.probation_jobs > 0 \
            and now_score >= s.reputation_suspend_below:
        graduated = (await session.execute(update(Miner.__table__).where(
            Miner.id == miner_id, Miner.graduated_at.is_(None),
            _passes_since_last_failure(miner_id) >= s.probation_jobs)
            .values(graduated_at=now).returning(Miner.id))).first() is not None
    if (not passed and work and s.probation_jobs > 0 and row.graduated_at is not None
            and row.address.lower() not in s.trusted):
        # (a suspended wallet too: if an operator lifts the suspension, it starts on probation)
        demoted = (await session.execute(update(Miner.__table__).where(
            Miner.id == miner_id, Miner.graduated_at.is_not(None))
            .values(graduated_at=None).returning(Miner.id))).first() is not None
        if demoted and not suspended:  # its business leases: back to the queue, not answered
            returned = await take_back_all(session, c, miner_id)
            after_commit(session, lambda: standing.forget_everywhere(c),
                         what="announcing a wallet back on probation")
            log.warning("miner %d (%s) back on probation after a failed %s check%s; "
                        "%d lease(s) returned", miner_id, row.address, kind,
                        f" of job {job_id}" if job_id else "", returned)
    standing.forget(c, miner_id)
    return Outcome(now_score, suspended, graduated, demoted)


async def record_passed(conn: asyncpg.Connection, c: AppContext, *, miner_id: int, kind: str,
                        job_id: str | None, now: datetime, weight: float = 1.0,
                        similarity: float | None = None) -> Outcome:
    """record() of a passed check of the work, on PostgreSQL's driver in the connection's
    transaction (app/trust/pg.py: one statement, a second only if the wallet may graduate).
    A pass never suspends, demotes or forfeits: those stay in record()."""
    if kind not in KINDS or kind == "feedback":
        raise ValueError(f"not a check of the work: {kind!r}")
    s = c.settings
    row = await trust_pg.passed(conn, miner_id=miner_id, kind=kind, job_id=job_id, now=now,
                                weight=weight, similarity=similarity,
                                keep=1.0 - s.reputation_decay)
    if row is None:
        return Outcome(0.5, False, False)
    rep_passed, rep_failed, graduated_before = row
    now_score = standing.score(rep_passed, rep_failed)
    graduated = False
    if not graduated_before and s.probation_jobs > 0 and now_score >= s.reputation_suspend_below:
        graduated = await trust_pg.graduate(conn, miner_id, now, s.probation_jobs)
    standing.forget(c, miner_id)
    return Outcome(now_score, False, graduated)


def _passes_since_last_failure(miner_id: int) -> Any:
    """The wallet's passed work checks after its last failed one (all of them if it never
    failed), as a scalar subquery: probation is served again after each failure."""
    work = and_(TrustCheck.miner_id == miner_id, TrustCheck.kind != "feedback")
    last_failure = (select(func.coalesce(func.max(TrustCheck.id), 0))
                    .where(work, TrustCheck.passed.is_(False)).scalar_subquery())
    return (select(func.count()).select_from(TrustCheck)
            .where(work, TrustCheck.passed.is_(True), TrustCheck.id > last_failure)
            .scalar_subquery())


async def _forget_sessions(c: AppContext) -> None:
    """Every process reads the wallet's sessions afresh (they carry the suspension flag)."""
    c.auth_cache.clear()
    await auth_cache.forget_everywhere(c.redis, c.settings.redis_prefix)
