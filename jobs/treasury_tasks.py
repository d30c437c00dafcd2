"""Treasury tasks for the arq worker: WHEN buybacks start and run. WHAT they do is app/treasury.

Register in jobs/worker.py:
    functions: func(run_buyback, name="run_buyback", keep_result=0, max_tries=BUYBACK_MAX_TRIES)
    cron:      (check_buyback_threshold, dict(second=<every BUYBACK_CHECK_INTERVAL_S>, run_at_startup=True))
    startup:   await treasury_startup(ctx)   (after ctx["app"] exists)
    shutdown:  await treasury_shutdown(ctx)  (before the AppContext is closed)

ctx["app"] is the worker's AppContext; with CHAIN_RPC_URL set, startup attaches the chain to
it (app/chainlink.py), so the runner finds the web3 client and the treasury there.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry
from redis.exceptions import RedisError

from app.chainlink import attach_chain, detach_chain
from app.context import AppContext
from app.errors import AppError
from app.treasury import runner, service
from app.treasury.dispatch import enqueue_buyback

log = logging.getLogger("jobs.treasury")
BUYBACK_MAX_TRIES = 50  # transient chain trouble only; definitive failures end the buyback
RETRY_BASE_S = 2.0
RETRY_MAX_S = 300.0


def every_s(interval_s: int) -> set[int]:
    """Cron seconds for a check every ``interval_s`` seconds (1..60)."""
    step = min(max(int(interval_s), 1), 60)
    return set(range(0, 60, step))


async def treasury_startup(ctx: dict[str, Any]) -> None:
    app: AppContext = ctx["app"]
    if app.settings.chain_rpc_url and "web3" not in app.extras:
        attach_chain(app)


async def treasury_shutdown(ctx: dict[str, Any]) -> None:
    app: AppContext | None = ctx.get("app")
    if app is not None:
        await detach_chain(app)


async def run_buyback(ctx: dict[str, Any], buyback_id: int) -> str:
    """Run or resume one buyback. Transient chain errors are retried with backoff; the records
    let the next try resume where this one stopped."""
    app: AppContext = ctx["app"]
    try:
        return await runner.run_buyback(app, buyback_id)
    except runner.BuybackStuck:
        log.exception("buyback %d needs an operator", buyback_id)
        raise
    except AppError:
        raise  # unconfigured treasury, unknown id: retrying would not help
    except Exception as exc:  # RPC down, receipt timeout, fee cap, nonce trouble
        tries = int(ctx.get("job_try") or 1)
        defer = min(RETRY_BASE_S * 2 ** (tries - 1), RETRY_MAX_S)
        log.warning("buyback %d: %s: %s; retry %d in %.0fs", buyback_id, type(exc).__name__,
                    exc, tries, defer)
        raise Retry(defer=defer) from exc


async def check_buyback_threshold(ctx: dict[str, Any]) -> int | None:
    """Start a buyback when unallocated revenue >= BUYBACK_THRESHOLD_USD (the same claim as
    POST /trigger-buyback, so they race safely), and re-enqueue an active buyback whose arq job
    is gone (Redis lost it, or the API could not enqueue). Returns the buyback id it enqueued."""
    app: AppContext = ctx["app"]
    async with app.db.sessions() as session:
        active = await service.active_buyback(session)
        if active is None:
            usd, _ = await service.unallocated_usd(session)
    if active is not None:
        await _enqueue(app, active.id)
        return active.id
    if usd < app.settings.buyback_threshold_usd or usd <= 0:
        return None
    try:
        async with app.db.transaction() as session:
            bb = await service.start_buyback(session, "auto")
    except (service.BuybackActive, service.NoRevenue) as exc:
        log.info("threshold check: %s", exc.detail)
        return None
    log.info("buyback %d started: %s USD unallocated >= threshold %s USD", bb.id, bb.usd_amount,
             app.settings.buyback_threshold_usd)
    await _enqueue(app, bb.id)
    return bb.id


async def _enqueue(app: AppContext, buyback_id: int) -> None:
    try:
        await enqueue_buyback(app, buyback_id)
    except RedisError as exc:
        log.warning("could not enqueue buyback %d: %s; next check retries", buyback_id, exc)
