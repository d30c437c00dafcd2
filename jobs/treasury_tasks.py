"""Treasury tasks for the arq worker: WHEN buybacks start and run. WHAT they do is app/treasury.

Registered in jobs/worker.py: run_buyback (job id {REDIS_PREFIX}:buyback:{id}) and the
check_buyback_threshold cron (every second, throttled to BUYBACK_CHECK_INTERVAL_S).

ctx["app"] is the worker's AppContext (app/context.py); with CHAIN_RPC_URL set it holds the chain
client, and the runner builds the treasury there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from arq import Retry
from redis.exceptions import RedisError

from app import observability
from app.context import AppContext
from app.errors import AppError
from app.treasury import price, repository, runner
from app.treasury.dispatch import enqueue_buyback
from app.treasury.onchain import get_treasury

log = logging.getLogger("jobs.treasury")
BUYBACK_MAX_TRIES = 50  # transient chain trouble only; definitive failures end the buyback
RETRY_BASE_S = 2.0
RETRY_MAX_S = 300.0
LOCK_TTL_S = 60
LOCK_BUSY_RETRY_S = 5
_random = secrets.SystemRandom()


class RunnerLockLost(Exception):
    """The Redis runner lock expired or was taken while this run held it."""


@contextlib.asynccontextmanager
async def runner_lock(app: AppContext) -> AsyncIterator[bool]:
    """One buyback runner at a time across worker processes: the treasury is one account and
    one nonce sequence. A Redis lock with a token, renewed while held. (The records make a
    second runner harmless for mined transactions; this keeps two from signing at once.)

    If the lock is lost (taken by another token, or not renewable before it expires) the body
    is cancelled and RunnerLockLost raised: running on without the lock would let a second
    runner plan and sign the same remaining chunk with another nonce (a double swap)."""
    key = f"{app.settings.redis_prefix}:treasury:runner"
    token = uuid.uuid4().hex
    if not await app.redis.set(key, token, nx=True, px=int(LOCK_TTL_S * 1000)):
        yield False
        return
    body = asyncio.current_task()
    lost: list[str] = []

    async def renew() -> None:
        held_until = time.monotonic() + LOCK_TTL_S
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            try:
                if await app.redis.eval(_RENEW, 1, key, token, int(LOCK_TTL_S * 1000)):
                    held_until = time.monotonic() + LOCK_TTL_S
                    continue
                lost.append(f"treasury runner lock {key} was taken or expired")
            except (RedisError, OSError) as exc:
                if time.monotonic() + LOCK_TTL_S / 3 < held_until:
                    log.warning("treasury runner lock %s: renewal failed (%s); retrying", key,
                                type(exc).__name__)
                    continue
                lost.append(f"treasury runner lock {key} could not be renewed before expiry")
            log.error("%s; stopping this run", lost[-1])
            if body is not None:
                body.cancel()
            return

    renewer = asyncio.create_task(renew())
    try:
        yield True
    except asyncio.CancelledError:
        if lost and body is not None and body.uncancel() == 0:
            raise RunnerLockLost(lost[-1]) from None
        raise
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        if not lost:
            with contextlib.suppress(RedisError, OSError):
                await app.redis.eval(_RELEASE, 1, key, token)


_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0")
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


async def run_buyback(ctx: dict[str, Any], buyback_id: int) -> str:
    """Run or resume one buyback. Transient chain errors are retried with backoff; the records
    let the next try resume where this one stopped."""
    app: AppContext = ctx["app"]
    try:
        with (observability.bound(buyback_id=buyback_id), observability.time_buyback_step("run"),
              observability.job_span("buyback run", "buyback", buyback_id)):
            async with runner_lock(app) as held:
                if not held:
                    log.info("buyback %d: another runner holds the treasury; retry in %ss",
                             buyback_id, LOCK_BUSY_RETRY_S)
                    raise Retry(defer=LOCK_BUSY_RETRY_S)
                return await _run(ctx, app, buyback_id)
    except RunnerLockLost as exc:  # stopped mid-run: the next try resumes from the records
        log.warning("buyback %d: %s; retry in %ss", buyback_id, exc, LOCK_BUSY_RETRY_S)
        raise Retry(defer=LOCK_BUSY_RETRY_S) from None


async def _run(ctx: dict[str, Any], app: AppContext, buyback_id: int) -> str:
    try:
        return await runner.run_buyback(app, buyback_id)
    except runner.Wait as pause:
        # Not a failure (chunk interval, price off its TWAP, confirmations, operator pause):
        # nothing is sent now, and this worker (and the runner lock) is not held meanwhile.
        # The job keeps its deterministic id while deferred, so the cron's re-enqueue is a
        # no-op meanwhile; the runner checks its conditions again from the records.
        log.info("%s", pause)
        raise Retry(defer=pause.seconds) from None
    except runner.BuybackStuck:
        log.exception("buyback %d needs an operator", buyback_id)
        raise
    except AppError:
        raise  # unconfigured treasury, unknown id: retrying would not help
    except Exception as exc:  # RPC down, receipt timeout, fee cap, nonce trouble
        tries = int(ctx.get("job_try") or 1)
        defer = min(RETRY_BASE_S * 2 ** (tries - 1), RETRY_MAX_S)
        log.warning("buyback %d: %s: %s; retry %d in %.0fs", buyback_id, type(exc).__name__,
                    _redacted(app, exc), tries, defer)
        raise Retry(defer=defer) from exc


def _redacted(app: AppContext, exc: BaseException) -> str:
    """The exception's message without the RPC URL (provider errors quote it; it often carries
    an API key)."""
    text = str(exc)
    url = app.settings.chain_rpc_url
    return text.replace(url, "<CHAIN_RPC_URL>") if url else text


async def check_buyback_threshold(ctx: dict[str, Any]) -> int | None:
    """Start a buyback when unallocated revenue >= BUYBACK_THRESHOLD_USD (the same claim as
    POST /trigger-buyback, so they race safely), and re-enqueue an active buyback whose arq job
    is gone (Redis lost it, or the API could not enqueue). Returns the buyback id it enqueued.

    Scheduled every second; does its work at most every BUYBACK_CHECK_INTERVAL_S plus a random
    [0, BUYBACK_CHECK_JITTER_S) per worker, so a buyback's start cannot be timed from outside.
    Starts nothing while an operator has paused the treasury. Each check also stores a price
    observation of the pool, the history the runner's TWAP is computed from."""
    app: AppContext = ctx["app"]
    now = time.monotonic()
    if now < ctx.get("treasury_next_check", 0.0):
        return None
    jitter = float(app.settings.buyback_check_jitter_s)
    ctx["treasury_next_check"] = now + app.settings.buyback_check_interval_s + (
        _random.uniform(0, jitter) if jitter > 0 else 0.0)
    await _observe(app)
    async with app.db.sessions() as session:
        active = await repository.active_buyback(session)
        paused = (await repository.control(session)).paused
        if active is None:
            usd, _ = await repository.unallocated_usd(session)
    if active is not None:
        await _enqueue(app, active.id)
        return active.id
    if paused:
        log.info("threshold check: the treasury is paused by an operator; no buyback starts")
        return None
    if usd < app.settings.buyback_threshold_usd or usd <= 0:
        return None
    try:  # a buyback this worker cannot run would hold the active slot: start none
        await get_treasury(app, signer=True)
    except AppError as exc:
        log.warning("%s USD unallocated, but no buyback starts: %s", usd, exc.detail)
        return None
    try:
        async with app.db.transaction() as session:
            bb = await repository.start_buyback(session, "auto")
    except (repository.BuybackActive, repository.NoRevenue) as exc:
        log.info("threshold check: %s", exc.detail)
        return None
    log.info("buyback %d started: %s USD unallocated >= threshold %s USD", bb.id, bb.usd_amount,
             app.settings.buyback_threshold_usd)
    await _enqueue(app, bb.id)
    return bb.id


async def _observe(app: AppContext) -> None:
    try:
        await price.observe_price(app)
    except AppError:
        pass  # no chain or treasury configured: nothing to observe
    except Exception as exc:  # provider errors: the next check observes again
        log.warning("price observation failed: %s", type(exc).__name__)


async def _enqueue(app: AppContext, buyback_id: int) -> None:
    try:
        await enqueue_buyback(app, buyback_id)
    except RedisError as exc:
        log.warning("could not enqueue buyback %d: %s; next check retries", buyback_id, exc)
