"""Keeping the queue honest: the lease reaper and the queue reconciler.

Both are safe to run in several processes at once (every change is a conditional UPDATE and
duplicate queue entries are skipped at lease time). The arq worker runs them as cron jobs;
the API also runs them in-process unless RUN_MAINTENANCE_IN_API is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from app import observability
from app.accounts import billing
from app.context import AppContext
from app.leases import rules
from app.leases.protocol import requeue
from app.models import ChatJob, IdleJob, utcnow

log = logging.getLogger(__name__)
JOB_MODELS = {"chat": ChatJob, "idle": IdleJob}
RECHECK_S = 0.5  # reconcile_queue: a missing id is pushed only if still missing this much later


async def reap_leases(ctx: AppContext) -> dict[str, int]:
    """Expired leases go back to the queue (front), or fail after MAX_ATTEMPTS deliveries."""
    counts = {"requeued": 0, "failed": 0}
    for kind, model in JOB_MODELS.items():
        async with ctx.db.transaction() as session:
            requeued, failed = await rules.reap_expired(session, model, utcnow(),
                                                          ctx.settings.max_attempts)
            # a job that failed costs its business nothing: its hold goes back, in this
            # transaction (the businesses locked first, in id order: no deadlock with a batch)
            if len(failed) > 1:
                await billing.lock_payers(session, model, [int(i) if kind == "idle" else i
                                                           for i in failed])
            await billing.release(session, kind, failed, note="no result after max deliveries")
        if requeued:
            await requeue(ctx, kind, requeued)
            log.info("lease reaper: %d %s job(s) back in the queue", len(requeued), kind)
        if failed:
            with contextlib.suppress(Exception):
                await ctx.queue.publish_done(*failed)
            log.warning("lease reaper: %d %s job(s) failed after %d deliveries", len(failed),
                        kind, ctx.settings.max_attempts)
        observability.count_lease_outcome(kind, "expired", len(requeued) + len(failed))
        counts["requeued"] += len(requeued)
        counts["failed"] += len(failed)
    return counts


async def reconcile_queue(ctx: AppContext) -> int:
    """Push back every job the DB says is queued but Redis does not hold (lost or flushed).

    An id a miner's poll has just popped is in neither place for a moment (not in Redis, still
    queued in the DB until its lease commits, or on its way back to the front when the lease is
    refused): pushing it then puts it in the queue twice, and an idle poll yields to the stale
    copy as to waiting chat. So what is missing is looked at again RECHECK_S later, and only
    what is still queued and still missing is pushed."""
    pushed = 0
    cutoff = utcnow() - timedelta(seconds=ctx.settings.reconcile_grace_s)
    for kind, model in JOB_MODELS.items():
        missing = await _missing(ctx, kind, model, cutoff)
        if missing:
            await asyncio.sleep(RECHECK_S)
            again = set(await _missing(ctx, kind, model, cutoff))
            missing = [job_id for job_id in missing if job_id in again]
        if missing:
            # RPUSH puts each id at the consuming end, so push newest first: oldest comes out first
            await requeue(ctx, kind, list(reversed(missing)))
            log.warning("reconciler: re-enqueued %d %s job(s) Redis had lost", len(missing), kind)
            pushed += len(missing)
    return pushed


async def _missing(ctx: AppContext, kind: str, model: type, cutoff: datetime) -> list[str]:
    """The jobs of `kind` the DB says are queued (since before `cutoff`), oldest first, that no
    list of Redis holds."""
    async with ctx.db.sessions() as session:
        queued = await rules.queued_ids(session, model, cutoff)
    if not queued:
        return []
    present = await ctx.queue.members(kind)
    return [job_id for job_id in queued if job_id not in present]


async def run_forever(ctx: AppContext) -> None:
    """The in-process loops: reaper every REAPER_INTERVAL_S, reconciler every RECONCILE_INTERVAL_S."""
    s = ctx.settings
    loop = asyncio.get_running_loop()
    next_reconcile = loop.time()
    failing = False
    while True:
        try:
            await reap_leases(ctx)
            if loop.time() >= next_reconcile:
                await reconcile_queue(ctx)
                next_reconcile = loop.time() + s.reconcile_interval_s
            if failing:
                log.info("maintenance recovered")
                failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis or the DB is down: try again next round
            if not failing:  # once per outage, not once per round
                log.warning("maintenance failing: %s: %s", type(exc).__name__, exc)
                failing = True
            next_reconcile = loop.time()  # reconcile as soon as things are back
        await asyncio.sleep(s.reaper_interval_s)
