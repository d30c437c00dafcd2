from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

import hmac

from pydantic import Field
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app import observability
from app.auth.secrets import bearer
from app.context import ctx
from app.errors import Unauthorized
from app import trust
from app.ops import metrics
from app.blockcache import cache_of
from app.ops import health as checks_of
from app.ops.health import run_checks
from app.ratelimit import limit_metrics
from app.schemas import QueryParams, ResponseBody
from app.trust.schemas import TrustOut
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
    checks = await run_checks(ctx(request), cache_of(request))
    failing = [name for name, result in checks.items() if not result["ok"]]
    down = any(checks[name]["required"] for name in failing)
    status = "down" if down else "degraded" if failing else "ok"
    body = HealthOut(status=status, failing=failing,
                     checks={k: CheckOut(**v) for k, v in checks.items()})
    return json_response(body, 503 if down else 200)


@router.get("/", responses={200: HealthOut, 503: HealthOut}, errors=(429,),
            limit=checks_of.limit)
async def root(request: Request):  # type: ignore[no-untyped-def]
    """Basic health: the database and Redis (503 naming the failing check)."""
    return await _health(request)


@router.get("/health", responses={200: HealthOut, 503: HealthOut}, errors=(429,),
            limit=checks_of.limit)
async def health(request: Request):  # type: ignore[no-untyped-def]
    """Health of every dependency, with latency; 503 naming the failing checks when a required
    one is down (database, Redis); an optional one (chain) failing only degrades."""
    return await _health(request)


class DriftingMinerOut(ResponseBody):
    miner: str = Field(description="the miner's wallet address")
    reported_tokens: int
    counted_tokens: int
    jobs: int


class TokenDriftOut(ResponseBody):
    window_s: int = Field(description="jobs completed in this many seconds, with a reported count")
    reported_tokens: int = Field(description="output tokens the miners reported (idle: capped at "
                                             "max_tokens, as billed)")
    counted_tokens: int = Field(description="output tokens the server counted: what was credited")
    over_pct: int = Field(description="a miner over-reports above this % of our count")
    miners_over: int = Field(description="miners over-reporting in the window")
    worst: list[DriftingMinerOut] = Field(description="the worst over-reporters by excess tokens "
                                                      f"(at most {metrics.DRIFT_TOP})")


class MetricsOut(ResponseBody):
    runpod_income_usd: Decimal = Field(description="all idle-job revenue (seed name), USD")
    idle_revenue_usd_by_source: dict[str, Decimal]
    chat_revenue_usd: Decimal = Field(description="priced chat's revenue (charges), USD")
    revenue_usd: Decimal = Field(description="all revenue: what businesses were charged, USD")
    unallocated_revenue_usd: Decimal
    total_idle_jobs_processed: int
    total_buyback_usd: Decimal
    last_buyback_timestamp: datetime | None
    total_serv_burned: str = Field(description="$SERV burned, integer base units")
    active_buyback: dict[str, int | str] | None = Field(description="{id} of the active buyback (not its step), or null")
    queue_depth: dict[str, int | None]
    active_miners: int
    jobs: dict[str, dict[str, int]]
    token_drift: TokenDriftOut


class MetricsQuery(QueryParams):
    format: Literal["json", "prometheus"] | None = None


PROMETHEUS = {"text/plain": {"schema": {"type": "string",
                                        "description": "Prometheus text exposition format 0.0.4"}}}


def _require_metrics_token(request: Request) -> None:
    expected = ctx(request).settings.metrics_token
    if expected is None:
        return
    given = bearer(request.headers.get("authorization")) or ""
    # Constant time: the token is compared, never looked up.
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("this deployment's metrics need its METRICS_TOKEN: "
                           "Authorization: Bearer <token>", code="invalid_metrics_token")


@router.get("/metrics", query=MetricsQuery, responses={200: MetricsOut}, content={200: PROMETHEUS},
            errors=(401,), limit=limit_metrics)
async def get_metrics(request: Request, query: MetricsQuery) -> Response:
    """Revenue, buybacks, queue depths, active miners, jobs by status and miners' token-count
    drift (reported vs counted). JSON (money as strings); Prometheus text with
    `Accept: text/plain` or `?format=prometheus`. With METRICS_TOKEN set, only for
    `Authorization: Bearer <METRICS_TOKEN>`."""
    _require_metrics_token(request)
    c = ctx(request)
    values = await metrics.collect_cached(c)  # at most once per METRICS_CACHE_S per process
    wants_text = query.format == "prometheus" or (
        query.format is None and "text/plain" in request.headers.get("accept", ""))
    if wants_text:
        text = metrics.as_prometheus({**values, "redis_round_trip_seconds":
                                      await metrics.redis_round_trip(c)})
        return PlainTextResponse(text + observability.render_metrics(c.settings),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")
    return json_response(metrics.as_json(values))


RATE_WINDOW_S = 300  # per-minute rates are averaged over five minutes: steadier than the last one


class LedgerOut(ResponseBody):
    revenue_usd: Decimal = Field(description="all revenue (what businesses were charged), USD")
    unallocated_usd: Decimal = Field(description="revenue no buyback has claimed yet")
    bought_usd: Decimal = Field(description="USD of burned buybacks")
    serv_burned: str = Field(description="$SERV burned per our records, integer base units")
    active_buyback_id: int | None = Field(description="the buyback in progress, if any")


class NetworkOut(ResponseBody):
    active_miners: int = Field(description=f"miners seen in the last "
                                           f"{metrics.ACTIVE_MINER_WINDOW_S} s")
    jobs_per_minute: dict[str, float] = Field(
        description=f"jobs completed per minute by kind (chat, idle), averaged over the last "
                    f"{RATE_WINDOW_S} s")
    completed_in_window: dict[str, int] = Field(description="jobs completed in the window, by kind")
    window_s: int
    queue_depth: dict[str, int | None] = Field(description="job ids waiting in the queue by kind; "
                                                           "null when the queue did not answer")
    ledger: LedgerOut = Field(description="revenue and burns per our records: the public part "
                                          "of /metrics, which METRICS_TOKEN may close")
    trust: TrustOut = Field(description="the checks of miners' answers (README: Why you can "
                                        "trust the answers): scores and checks per hour")


@router.get("/network", responses={200: NetworkOut})
async def network(request: Request) -> Response:
    """Public: the network now (miners online, chat and idle jobs per minute, queue depths) and
    its ledger (revenue, burns), counted as /metrics counts them. Cacheable for 10 s."""
    c = ctx(request)
    async with c.db.sessions() as session:
        miners = await metrics.active_miners(session)
        done = await metrics.completed_recently(session, RATE_WINDOW_S)
        money = await metrics.ledger(session)
    body = NetworkOut(active_miners=miners, completed_in_window=done, window_s=RATE_WINDOW_S,
                      jobs_per_minute={k: round(n * 60 / RATE_WINDOW_S, 2) for k, n in done.items()},
                      queue_depth=await metrics.queue_depths(c), ledger=LedgerOut(**money),
                      trust=TrustOut(**await trust.network_summary(c)))
    return json_response(body, headers={"Cache-Control": "public, max-age=10"})
