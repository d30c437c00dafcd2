"""Health checks: each dependency answers within a timeout or counts as down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from app.context import AppContext

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


async def run_checks(ctx: AppContext) -> dict[str, dict]:
    """Every check, each with ok, latency_ms, required (and error when it failed)."""
    required = REQUIRED
    checks: dict[str, Check] = {**required}
    if ctx.chain is not None:
        checks["chain"] = _chain

    async def one(check: Check) -> dict:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(check(ctx), CHECK_TIMEOUT_S)
            ok, error = True, None
        except Exception as exc:  # reported, not raised: health must always answer
            # the class only: /health is public and messages can name internal hosts
            ok, error = False, type(exc).__name__
        result: dict = {"ok": ok, "latency_ms": round((time.perf_counter() - start) * 1000, 2),
                        "required": check in required.values()}
        if error:
            result["error"] = error
        return result

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))
