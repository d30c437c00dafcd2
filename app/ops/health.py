"""Health checks: each dependency answers within a timeout or counts as down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from starlette.requests import Request

from app.blockcache import BlockCache, HeadUnavailable
from app.context import AppContext
from app.ratelimit import Rate, client_ip

CHECK_TIMEOUT_S = 2.0
Check = Callable[[AppContext], Awaitable[object]]


async def _database(ctx: AppContext) -> None:
    async with ctx.db.probe_engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _redis(ctx: AppContext) -> None:
    await ctx.redis.ping()


async def _chain(ctx: AppContext) -> None:
    if ctx.chain is not None:
        await ctx.chain.check()


REQUIRED: dict[str, Check] = {"database": _database, "redis": _redis}


async def limit(request: Request) -> None:
    """Per client IP, RATE_LIMIT_HEALTH_PER_MIN: each call probes the database (on a pool of
    one connection of its own) and Redis; a flood must not queue the prober's own checks."""
    c: AppContext = request.app.state.ctx
    await c.limiter.enforce("health", client_ip(request),
                            Rate.per_minute(c.settings.rate_limit_health_per_min),
                            "health checks from this address")


async def run_checks(ctx: AppContext, heads: BlockCache | None = None) -> dict[str, dict]:
    """Every check, each with ok, latency_ms, required (and error when it failed). With
    `heads` (the process's BlockCache) the chain check reads its latest block: one
    eth_getBlockByNumber per HEAD_POLL_S whatever the request rate, instead of one per call."""
    required = REQUIRED
    checks: dict[str, Check] = {**required}
    if ctx.chain is not None:
        checks["chain"] = _chain if heads is None else (lambda c: heads.latest(c))

    async def one(check: Check) -> dict:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(check(ctx), CHECK_TIMEOUT_S)
            ok, error = True, None
        except Exception as exc:  # reported, not raised: health must always answer
            # the class only: /health is public and messages can name internal hosts
            ok, error = False, (exc.cause if isinstance(exc, HeadUnavailable)
                                else type(exc).__name__)
        result: dict = {"ok": ok, "latency_ms": round((time.perf_counter() - start) * 1000, 2),
                        "required": check in required.values()}
        if error:
            result["error"] = error
        return result

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))
