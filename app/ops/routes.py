from __future__ import annotations

from typing import Literal

from starlette.requests import Request

from app.context import ctx
from app.ops.health import run_checks
from app.schemas import ResponseBody
from app.web import Router, json_response

router = Router("ops")


class CheckOut(ResponseBody):
    ok: bool
    latency_ms: float
    required: bool
    error: str | None = None


class HealthOut(ResponseBody):
    service: str = "mia-backend"
    status: Literal["ok", "degraded", "down"]
    failing: list[str]
    checks: dict[str, CheckOut]


async def _health(request: Request):  # type: ignore[no-untyped-def]
    checks = await run_checks(ctx(request))
    failing = [name for name, result in checks.items() if not result["ok"]]
    down = any(checks[name]["required"] for name in failing)
    status = "down" if down else "degraded" if failing else "ok"
    body = HealthOut(status=status, failing=failing,
                     checks={k: CheckOut(**v) for k, v in checks.items()})
    return json_response(body, 503 if down else 200)


@router.get("/", responses={200: HealthOut, 503: HealthOut})
async def root(request: Request):  # type: ignore[no-untyped-def]
    """Basic health: the database and Redis (503 naming the failing check)."""
    return await _health(request)


@router.get("/health", responses={200: HealthOut, 503: HealthOut})
async def health(request: Request):  # type: ignore[no-untyped-def]
    """Health of every dependency, with latency; 503 naming the failing checks when a required
    one is down (database, Redis); an optional one (chain) failing only degrades."""
    return await _health(request)
