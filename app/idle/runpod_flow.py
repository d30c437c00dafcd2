"""Idle jobs on RunPod serverless: claim (queued -> processing), run, complete or fail.

The worker (jobs/worker.py) says WHEN; this module says WHAT. `run()` is the task's state
machine: like the treasury's runner it commits each step in a short transaction of its own
before the next call to RunPod (persist before calling out), so it owns its transactions the way
a route does; claim_now() takes the operator route's. Crash safety:
- Claims are conditional UPDATEs, so a job is either leased to a miner or claimed for RunPod.
- A run holds the job with lease_id/lease_expires_at (renewed while it waits). A run that
  finds a live holder does nothing; a dead holder's claim expires and the dispatcher
  re-enqueues the job, which then resumes.
- The RunPod job id is committed BEFORE waiting; a resumed run waits on that id instead of
  submitting again. (A crash between RunPod accepting /run and that commit can leave one
  orphan RunPod job: a cost, never a second completion.)
- Completion is one transaction: the conditional UPDATE that completes the job, then the charge
  of its hold and the RevenueEvent booked from it (app/accounts/billing.py). Failure releases
  the hold, in the failing transaction, and never writes revenue.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.context import AppContext
from app.db import after_commit
from app.errors import Conflict, NotFound, ServiceUnavailable
from app.accounts import billing
from app.idle import kind, revenue
from app.idle.dispatch import enqueue_runpod
from app.leases.protocol import announce, requeue
from app.models import IdleJob, JobStatus, utcnow
from app.runpod import (RunPodClient, RunPodError, RunPodNotFound, RunPodResult,
                        RunPodTimeout, RunPodTransientError, build_input)

log = logging.getLogger(__name__)
P = JobStatus.processing
ZERO = Decimal("0.000000")
CLAIM_BATCH = 200
POLL_INITIAL_S = 0.1
POLL_MAX_S = 2.0
EXECUTION_TIMEOUT_SLACK_S = 5.0


class Outcome(enum.StrEnum):
    completed = "completed"
    failed = "failed"
    retry = "retry"  # transient error: run again after `defer_s`
    skipped = "skipped"  # not ours to run (finished, or another run holds it)


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    reason: str | None = None
    defer_s: float = 0.0


def make_client(settings: Settings) -> RunPodClient | None:
    key, endpoint = settings.runpod_api_key, settings.runpod_endpoint_id
    if key is None or not endpoint:
        return None
    return RunPodClient(settings.runpod_base_url, key.get_secret_value(),
                        endpoint,
                        request_timeout_s=settings.runpod_request_timeout_s)


def backoff_s(settings: Settings, run: int) -> float:
    return float(settings.runpod_retry_base_s * 2 ** max(run - 1, 0))


# ------------------------------------------------------------------ claiming


def _claim_values(settings: Settings, now: datetime) -> dict[str, Any]:
    # lease_expires_at here means "a run should have started by then"; lease_id stays empty.
    return dict(status=P, processed_by="runpod", lease_id=None, miner_id=None, assigned_at=now,
                lease_expires_at=now + timedelta(seconds=settings.runpod_hold_s))


async def claim_stale(session: AsyncSession, settings: Settings, now: datetime) -> list[int]:
    """Queued jobs no miner took within IDLE_TO_RUNPOD_AFTER_S: claimed for RunPod."""
    cutoff = now - timedelta(seconds=settings.idle_to_runpod_after_s)
    oldest = (select(IdleJob.id).where(IdleJob.status == JobStatus.queued,
                                       IdleJob.created_at <= cutoff)
              .order_by(IdleJob.created_at).limit(CLAIM_BATCH).scalar_subquery())
    rows = await session.execute(
        update(IdleJob).where(IdleJob.id.in_(oldest), IdleJob.status == JobStatus.queued)
        .values(**_claim_values(settings, now)).returning(IdleJob.id)
        .execution_options(synchronize_session=False))
    return [r[0] for r in rows]


async def unattended(session: AsyncSession, now: datetime) -> list[tuple[int, int]]:
    """Claimed jobs whose run never started or whose holder died: (id, runs so far)."""
    rows = await session.execute(
        select(IdleJob.id, IdleJob.runpod_attempts).where(
            IdleJob.status == P,
            or_(IdleJob.lease_expires_at.is_(None), IdleJob.lease_expires_at <= now))
        .limit(CLAIM_BATCH))
    return [(r[0], r[1]) for r in rows]


async def dispatch_stale(ctx: AppContext) -> int:
    """Claim stale queued jobs and re-enqueue unattended ones. Returns arq jobs enqueued.
    Without RunPod, unattended claims go back to the miners instead."""
    if not ctx.settings.runpod_configured:
        await hand_back_unattended(ctx)
        return 0
    now = utcnow()
    async with ctx.db.transaction() as session:
        claimed = await claim_stale(session, ctx.settings, now)
    async with ctx.db.sessions() as session:
        todo = await unattended(session, now)
    todo += [(job_id, 0) for job_id in claimed if (job_id, 0) not in todo]
    if not todo:
        return 0
    new = await enqueue_runpod(ctx, todo)  # only after the claim committed
    if claimed:
        log.info("sent %d idle job(s) no miner took to RunPod", len(claimed))
    return new


async def hand_back_unattended(ctx: AppContext) -> list[int]:
    """Claims nobody can run (RunPod is not configured here) are queued for miners again.
    A run still going elsewhere cannot complete it after this: completion needs its claim."""
    now = utcnow()
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            update(IdleJob).where(
                IdleJob.status == P,
                or_(IdleJob.lease_expires_at.is_(None), IdleJob.lease_expires_at <= now))
            # A later claim starts afresh: a new RunPod job (the old one may be gone), all tries.
            .values(status=JobStatus.queued, processed_by=None, lease_id=None,
                    lease_expires_at=None, miner_id=None, runpod_job_id=None,
                    runpod_submitted_at=None, runpod_attempts=0)
            .returning(IdleJob.id).execution_options(synchronize_session=False))
        ids = [r[0] for r in rows]
    if ids:
        await requeue(ctx, "idle", [str(i) for i in ids])
        log.warning("RunPod is not configured: %d claimed idle job(s) handed back to miners",
                    len(ids))
    return ids


async def claim_now(session: AsyncSession, ctx: AppContext, job_id: int) -> None:
    """An operator sends a queued job to RunPod now: claimed in the caller's transaction, handed
    to the worker after it commits (if that enqueue is lost, the dispatcher re-enqueues the
    unattended claim once its hold runs out)."""
    if not ctx.settings.runpod_configured:
        raise ServiceUnavailable("RunPod is not configured (RUNPOD_API_KEY, RUNPOD_ENDPOINT_ID)",
                                 code="runpod_not_configured")
    won = (await session.execute(
        update(IdleJob).where(IdleJob.id == job_id, IdleJob.status == JobStatus.queued)
        .values(**_claim_values(ctx.settings, utcnow())).returning(IdleJob.id)
        .execution_options(synchronize_session=False))).first()
    if won is None:
        status = (await session.execute(
            select(IdleJob.status).where(IdleJob.id == job_id))).scalar()
        if status is None:
            raise NotFound("no such idle job", code="job_not_found")
        raise Conflict(f"only a queued job can be sent to RunPod; this one is {status}",
                       code="not_queued")
    after_commit(session, lambda: enqueue_runpod(ctx, [(job_id, 0)]),
                 what=f"handing idle job {job_id} to the worker")


# ------------------------------------------------------------------ running


@dataclass
class _Run:
    job_id: int
    run_id: str
    run: int
    prompt: str
    max_tokens: int
    runpod_job_id: str | None
    submitted_at: datetime | None
    last_reason: str | None

    def mine(self) -> list[Any]:
        return [IdleJob.id == self.job_id, IdleJob.status == P, IdleJob.lease_id == self.run_id]


async def run(ctx: AppContext, client: RunPodClient, job_id: int) -> RunResult:
    """One worker run of a claimed job. Never raises for RunPod's answers (they are outcomes);
    database or Redis errors propagate, and the claim's expiry brings the job back."""
    s = ctx.settings
    r = await _start(ctx, job_id)
    if r is None:
        return RunResult(Outcome.skipped)
    if r.run > s.runpod_max_tries:
        gave_up = await _fail(ctx, r, f"gave up after {s.runpod_max_tries} RunPod tries; last: "
                                      f"{r.last_reason or 'the worker stopped mid-run'}")
        if gave_up.outcome is Outcome.failed and r.runpod_job_id is not None:
            # Nobody will wait on it any more: stop it rather than let it run on and bill.
            with contextlib.suppress(RunPodError):
                await client.cancel(r.runpod_job_id)
        return gave_up
    keeper = asyncio.create_task(_keep_claim(ctx, r))
    try:
        return await _drive(ctx, client, r)
    except asyncio.CancelledError:
        # The worker is stopping: hand the claim back so the next run resumes at once. The
        # RunPod job is left running; its id is stored, so nothing is submitted twice.
        with contextlib.suppress(Exception):
            await asyncio.shield(_let_go(ctx, r))
        raise
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def _start(ctx: AppContext, job_id: int) -> _Run | None:
    now = utcnow()
    run_id = str(uuid.uuid4())
    async with ctx.db.transaction() as session:
        row = (await session.execute(
            update(IdleJob).where(
                IdleJob.id == job_id, IdleJob.status == P,
                or_(IdleJob.lease_id.is_(None), IdleJob.lease_expires_at.is_(None),
                    IdleJob.lease_expires_at <= now))
            .values(lease_id=run_id, runpod_attempts=IdleJob.runpod_attempts + 1,
                    lease_expires_at=now + timedelta(seconds=ctx.settings.runpod_hold_s))
            .returning(IdleJob.runpod_attempts, IdleJob.prompt, IdleJob.max_tokens,
                       IdleJob.runpod_job_id, IdleJob.runpod_submitted_at,
                       IdleJob.failure_reason)
            .execution_options(synchronize_session=False))).first()
        if row is None:
            return None
        submitted_at = row[4]
        if row[3] is not None and submitted_at is None:
            # A seed row (or one written before runpod_submitted_at existed): the RunPod job's
            # start is unknown, so its time budget starts now.
            submitted_at = now
            await session.execute(
                update(IdleJob).where(IdleJob.id == job_id, IdleJob.lease_id == run_id)
                .values(runpod_submitted_at=now).execution_options(synchronize_session=False))
    return _Run(job_id, run_id, row[0], row[1], row[2], row[3], submitted_at, row[5])


async def _let_go(ctx: AppContext, r: _Run) -> None:
    async with ctx.db.transaction() as session:
        await session.execute(update(IdleJob).where(*r.mine())
                              .values(lease_id=None, lease_expires_at=utcnow())
                              .execution_options(synchronize_session=False))


async def _keep_claim(ctx: AppContext, r: _Run) -> None:
    hold = ctx.settings.runpod_hold_s
    while True:
        await asyncio.sleep(hold / 3)
        try:
            async with ctx.db.transaction() as session:
                await session.execute(
                    update(IdleJob).where(*r.mine())
                    .values(lease_expires_at=utcnow() + timedelta(seconds=hold))
                    .execution_options(synchronize_session=False))
        except Exception as exc:  # the next beat may work; expiry is the worst case
            log.warning("could not renew the claim on idle job %d: %s", r.job_id,
                        type(exc).__name__)


async def _drive(ctx: AppContext, client: RunPodClient, r: _Run) -> RunResult:
    s = ctx.settings
    try:
        if r.runpod_job_id is None:
            # RunPod's own limit is a backstop for a worker that died: ours cancels first.
            rp_id = await client.submit(build_input(r.prompt, r.max_tokens), execution_timeout_ms=int(
                (s.runpod_timeout_s + EXECUTION_TIMEOUT_SLACK_S) * 1000))
            if not await _remember(ctx, r, rp_id):
                with contextlib.suppress(RunPodError):
                    await client.cancel(rp_id)
                return RunResult(Outcome.skipped)
        if r.runpod_job_id is None or r.submitted_at is None:
            raise RuntimeError(f"idle job {r.job_id}: no RunPod job recorded to wait on")
        elapsed = (utcnow() - r.submitted_at).total_seconds()
        remaining = max(s.runpod_timeout_s - elapsed, 0.5)
        result = await client.wait(r.runpod_job_id, timeout_s=remaining,
                                   poll_initial_s=POLL_INITIAL_S, poll_max_s=POLL_MAX_S)
    except RunPodTransientError as exc:
        return await _retry_or_fail(ctx, r, exc.reason)
    except RunPodNotFound as exc:
        if r.runpod_job_id is None:
            return await _fail(ctx, r, exc.reason)  # the endpoint itself is unknown
        # RunPod forgot the job (results expire): run it afresh on the next try.
        return await _retry_or_fail(ctx, r, exc.reason, forget_runpod_job=True)
    except RunPodTimeout as exc:
        return await _fail(ctx, r, f"RunPod did not finish within {s.runpod_timeout_s:g}s; "
                                   f"{'cancelled' if exc.cancelled else 'cancel failed'}")
    except RunPodError as exc:  # failed, malformed output, auth, protocol: retrying will not help
        return await _fail(ctx, r, exc.reason, execution_ms=exc.execution_ms)
    return await _complete(ctx, r, result)


async def _remember(ctx: AppContext, r: _Run, rp_id: str) -> bool:
    now = utcnow()
    async with ctx.db.transaction() as session:
        won = (await session.execute(
            update(IdleJob).where(*r.mine(), IdleJob.runpod_job_id.is_(None))
            .values(runpod_job_id=rp_id, runpod_submitted_at=now).returning(IdleJob.id)
            .execution_options(synchronize_session=False))).first()
    if won is not None:
        r.runpod_job_id, r.submitted_at = rp_id, now
    return won is not None


async def _complete(ctx: AppContext, r: _Run, result: RunPodResult) -> RunResult:
    s = ctx.settings
    if result.output_tokens is None:
        return await _fail(ctx, r, "malformed output: RunPod reported no output token count",
                           execution_ms=result.execution_ms)
    now = utcnow()
    tokens = min(result.output_tokens, r.max_tokens)
    earned = ZERO
    async with ctx.db.transaction() as session:
        won = (await session.execute(
            update(IdleJob).where(*r.mine())
            .values(status=JobStatus.completed, completed_at=now, lease_expires_at=None,
                    result=result.text, output_tokens=tokens, input_tokens=result.input_tokens,
                    usd_earned=ZERO, runpod_execution_ms=result.execution_ms,
                    runpod_cost_usd=revenue.runpod_cost(result.execution_ms,
                                                        s.runpod_cost_per_second_usd),
                    failure_reason=None)
            .returning(IdleJob.id).execution_options(synchronize_session=False))).first()
        if won is not None:
            earned = await kind.charge(session, r.job_id, tokens, "runpod", now)
    if won is None:
        return RunResult(Outcome.skipped, "another run finished this job first")
    await announce(ctx, str(r.job_id))
    log.info("idle job %d completed on RunPod: %d tokens, %s USD", r.job_id, tokens, earned)
    return RunResult(Outcome.completed)


async def _fail(ctx: AppContext, r: _Run, reason: str, *,
                execution_ms: int | None = None) -> RunResult:
    """Fail the job (never any revenue). `execution_ms`, when RunPod reported it for a job
    that ran, is recorded with its cost: RunPod bills failed jobs too."""
    reason = reason[:1000]
    values: dict[str, Any] = dict(status=JobStatus.failed, completed_at=utcnow(),
                                  lease_expires_at=None, failure_reason=reason)
    if execution_ms is not None:
        values.update(runpod_execution_ms=execution_ms, runpod_cost_usd=revenue.runpod_cost(
            execution_ms, ctx.settings.runpod_cost_per_second_usd))
    async with ctx.db.transaction() as session:
        won = (await session.execute(
            update(IdleJob).where(*r.mine()).values(**values)
            .returning(IdleJob.id).execution_options(synchronize_session=False))).first()
        if won is not None:  # the business pays nothing for a job that failed
            await billing.release(session, billing.IDLE, [r.job_id], note="failed on RunPod")
    if won is None:
        return RunResult(Outcome.skipped)
    await announce(ctx, str(r.job_id))
    log.warning("idle job %d failed on RunPod: %s", r.job_id, reason)
    return RunResult(Outcome.failed, reason)


async def _retry_or_fail(ctx: AppContext, r: _Run, reason: str, *,
                         forget_runpod_job: bool = False) -> RunResult:
    s = ctx.settings
    if r.run >= s.runpod_max_tries:
        return await _fail(ctx, r, f"RunPod unavailable after {r.run} tries: {reason}")
    defer = backoff_s(s, r.run)
    values: dict[str, Any] = dict(
        lease_id=None, failure_reason=f"try {r.run} of {s.runpod_max_tries}: {reason}"[:1000],
        # the arq retry comes after `defer`; only if it never does, the dispatcher takes over
        lease_expires_at=utcnow() + timedelta(seconds=defer + s.runpod_hold_s))
    if forget_runpod_job:
        values.update(runpod_job_id=None, runpod_submitted_at=None)
    async with ctx.db.transaction() as session:
        await session.execute(update(IdleJob).where(*r.mine()).values(**values)
                              .execution_options(synchronize_session=False))
    log.info("idle job %d: transient RunPod error, retry in %.1fs: %s", r.job_id, defer, reason)
    return RunResult(Outcome.retry, reason, defer)
