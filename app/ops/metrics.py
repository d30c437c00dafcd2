"""GET /metrics: the seed's revenue metrics plus queue and job gauges, from aggregate SQL only.

Every value is derived: revenue from the RevenueEvent ledger, counts from GROUP BY queries,
queue depths from Redis. The seed's SystemMetrics rows are refreshed from the same ledger
with one UPDATE ... SET value = (SELECT ...) each, never incremented in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from datetime import timedelta
from decimal import Decimal
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import case, func, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext
from app.idle import revenue
from app.models import (MICRO_PER_USD, ChatJob, IdleJob, JobStatus, Miner, RevenueEvent,
                        SystemMetrics, utcnow)
from app.queue import KINDS
from app import trust
from app.treasury import repository as treasury

ACTIVE_MINER_WINDOW_S = 300
# Token drift: miners' reported output tokens against the server's count (app/tokens.py), over
# jobs completed in the last DRIFT_WINDOW_S with a reported count. A miner "over-reports" when
# its reports add up to more than DRIFT_OVER_PCT % of our count; the DRIFT_TOP worst by excess
# tokens are named (a bounded label set, whatever the number of miners).
DRIFT_WINDOW_S = 3600
DRIFT_OVER_PCT = 110
DRIFT_TOP = 10
SOURCES = ("miner", "runpod")
JOB_MODELS: dict[str, type[ChatJob] | type[IdleJob]] = {"chat": ChatJob, "idle": IdleJob}


def _traffic(model: Any) -> list[Any]:
    """Check jobs (app/trust) are never counted as traffic."""
    return [trust.customer_jobs()] if model is ChatJob else []


async def refresh_system_metrics(session: AsyncSession) -> None:
    # SystemMetrics.value is the USD type (integer micro-units in SQL): sums of USD columns
    # go in as they are, a count is scaled to micro-units so it reads back as itself.
    derived = {
        # idle jobs' revenue only: priced chat's (source chat) is not the seed's figure
        "runpod_income_usd": select(func.coalesce(func.sum(RevenueEvent.amount_usd), 0))
        .where(RevenueEvent.carried_from_buyback_id.is_(None),
               RevenueEvent.source.in_(SOURCES)).scalar_subquery(),
        "total_idle_jobs_processed": select(func.count(RevenueEvent.id) * int(MICRO_PER_USD))
        .where(RevenueEvent.carried_from_buyback_id.is_(None),
               RevenueEvent.source.in_(SOURCES)).scalar_subquery(),
        "total_buyback_usd": treasury.burned_usd_subquery(),
    }
    for name, value in derived.items():
        await session.execute(update(SystemMetrics).where(SystemMetrics.metric_name == name)
                              .values(value=value, updated_at=utcnow())
                              .execution_options(synchronize_session=False))


async def active_miners(session: AsyncSession) -> int:
    since = utcnow() - timedelta(seconds=ACTIVE_MINER_WINDOW_S)
    return int((await session.execute(select(func.count()).select_from(Miner)
                                       .where(Miner.last_active >= since))).scalar_one())


async def completed_recently(session: AsyncSession, window_s: int) -> dict[str, int]:
    """Jobs of each kind completed (answered, not failed) in the last window_s seconds."""
    since = utcnow() - timedelta(seconds=window_s)
    out = {}
    for kind, model in JOB_MODELS.items():
        out[kind] = int((await session.execute(select(func.count()).select_from(model).where(
            model.status == JobStatus.completed, model.completed_at >= since,
            *_traffic(model)))).scalar_one())
    return out


async def token_drift(session: AsyncSession) -> dict[str, Any]:
    """Reported vs counted output tokens per miner, in SQL: totals, how many miners over-report,
    and the worst of them. An idle report is capped at the job's max_tokens as the bill is, so
    an honest miner that ran to the cap does not show as drift."""
    since = utcnow() - timedelta(seconds=DRIFT_WINDOW_S)
    capped = case((IdleJob.reported_tokens > IdleJob.max_tokens, IdleJob.max_tokens),
                  else_=IdleJob.reported_tokens)
    rows = union_all(*(
        select(model.miner_id.label("miner_id"), reported.label("reported"),
               model.output_tokens.label("counted"))
        .where(model.status == JobStatus.completed, model.completed_at >= since,
               model.reported_tokens.is_not(None), model.output_tokens.is_not(None),
               model.miner_id.is_not(None))
        for model, reported in ((ChatJob, ChatJob.reported_tokens), (IdleJob, capped)))
    ).subquery()
    per = (select(rows.c.miner_id, func.sum(rows.c.reported).label("reported"),
                  func.sum(rows.c.counted).label("counted"), func.count().label("jobs"))
           .group_by(rows.c.miner_id).subquery())
    over = per.c.reported * 100 > per.c.counted * DRIFT_OVER_PCT
    total = (await session.execute(select(
        func.coalesce(func.sum(per.c.reported), 0), func.coalesce(func.sum(per.c.counted), 0),
        func.count().filter(over)))).one()
    worst = (await session.execute(
        select(Miner.address, per.c.reported, per.c.counted, per.c.jobs)
        .join(Miner, Miner.id == per.c.miner_id).where(over)
        .order_by((per.c.reported - per.c.counted).desc(), Miner.address)
        .limit(DRIFT_TOP))).all()
    return {"window_s": DRIFT_WINDOW_S, "reported_tokens": int(total[0]),
            "counted_tokens": int(total[1]), "over_pct": DRIFT_OVER_PCT,
            "miners_over": int(total[2]),
            "worst": [{"miner": a, "reported_tokens": int(r), "counted_tokens": int(c),
                       "jobs": int(n)} for a, r, c, n in worst]}


async def queue_depths(ctx: AppContext) -> dict[str, int | None]:
    """Job ids waiting in Redis per kind; None for a kind Redis did not answer for."""
    depths: dict[str, int | None] = {}
    for kind in KINDS:
        depths[kind] = None
        with contextlib.suppress(RedisError, OSError):
            # check jobs (app/trust) are not traffic: their lists are left out
            depths[kind] = await ctx.queue.depth(kind, every_model=True, skip=trust.lists.TRUST)
    return depths


async def ledger(session: AsyncSession) -> dict[str, Any]:
    """The money figures anyone may see (/network, the transparency page): revenue, what is not
    yet claimed by a buyback, what bought $SERV and how much was burned, per our records."""
    sources = await revenue.by_source(session)
    unallocated, _ = await treasury.unallocated_usd(session)
    buybacks = await treasury.totals(session)
    return {"revenue_usd": revenue.usd(sum((usd for usd, _ in sources.values()), Decimal(0))),
            "unallocated_usd": unallocated, "bought_usd": buybacks.total_buyback_usd,
            "serv_burned": str(buybacks.total_serv_burned),
            "active_buyback_id": buybacks.active_buyback_id}


# The figures above cost full-table aggregates (~200 ms at 1M jobs): each process computes them
# at most once per METRICS_CACHE_S, one computation at a time, whoever asks meanwhile.
_CACHE: weakref.WeakKeyDictionary[Any, tuple[float, dict[str, Any]]] = weakref.WeakKeyDictionary()
_FLIGHTS: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()
computed = 0  # how many times collect() ran for /metrics (tests)


async def collect_cached(ctx: AppContext) -> dict[str, Any]:
    global computed
    ttl = ctx.settings.metrics_cache_s
    hit = _CACHE.get(ctx.db)
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    lock = _FLIGHTS.setdefault(ctx.db, asyncio.Lock())
    async with lock:
        hit = _CACHE.get(ctx.db)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
        values = await collect(ctx)
        computed += 1
        _CACHE[ctx.db] = (time.monotonic(), values)
        return values


async def redis_round_trip(ctx: AppContext) -> float | None:
    """One PING, in seconds; None when Redis does not answer."""
    start = time.perf_counter()
    try:
        await ctx.redis.ping()
    except (RedisError, OSError):
        return None
    return time.perf_counter() - start


async def collect(ctx: AppContext) -> dict[str, Any]:
    async with ctx.db.sessions() as session:
        sources = await revenue.by_source(session)
        unallocated, _ = await treasury.unallocated_usd(session)
        jobs: dict[str, dict[str, int]] = {}
        for kind, model in JOB_MODELS.items():
            rows = await session.execute(select(model.status, func.count())
                                         .where(*_traffic(model)).group_by(model.status))
            jobs[kind] = {status: int(n) for status, n in rows}
        buybacks = await treasury.totals(session)
        active = await active_miners(session)
        drift = await token_drift(session)
    depths = await queue_depths(ctx)
    # Revenue is what businesses were charged (app/accounts/billing.py): idle jobs' (by who did
    # the work) and priced chat's; `revenue_usd` is all of it, as /burns/summary counts it.
    total = revenue.usd(sum((usd for usd, _ in sources.values()), Decimal(0)))
    idle = {s: sources.get(s, (Decimal("0.000000"), 0)) for s in SOURCES}
    return {
        # the seed's name: all idle-job revenue, whether a miner or RunPod did the work
        "runpod_income_usd": revenue.usd(sum((usd for usd, _ in idle.values()), Decimal(0))),
        "idle_revenue_usd_by_source": {s: usd for s, (usd, _) in idle.items()},
        "chat_revenue_usd": sources.get("chat", (Decimal("0.000000"), 0))[0],
        "revenue_usd": total,
        "unallocated_revenue_usd": unallocated,
        "total_idle_jobs_processed": sum(n for _, n in idle.values()),
        "total_buyback_usd": buybacks.total_buyback_usd,  # USD of burned buybacks
        "last_buyback_timestamp": buybacks.last_buyback_at,
        "total_serv_burned": str(buybacks.total_serv_burned),  # base units, per our records
        # only which buyback is active: its step (and so when its next swap comes) is not public
        "active_buyback": None if buybacks.active_buyback_id is None else {
            "id": buybacks.active_buyback_id},
        "queue_depth": depths,
        "active_miners": active,
        "jobs": jobs,
        "token_drift": drift,
    }


def as_json(m: dict[str, Any]) -> dict[str, Any]:
    """Decimal money is sent as a string, so no client parses it into a float by accident."""
    def conv(v: Any) -> Any:
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(m)  # type: ignore[no-any-return]


def _label(value: Any) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def as_prometheus(m: dict[str, Any]) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, Any]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    metric("mia_runpod_income_usd", "counter", "All idle-job revenue in USD (seed name).",
           [("", m["runpod_income_usd"])])
    metric("mia_idle_revenue_usd", "counter", "Idle-job revenue in USD by who did the work.",
           [(f'{{source="{_label(s)}"}}', v) for s, v in m["idle_revenue_usd_by_source"].items()])
    metric("mia_chat_revenue_usd", "counter", "Priced chat revenue in USD (charges).",
           [("", m["chat_revenue_usd"])])
    metric("mia_revenue_usd", "counter", "All revenue in USD: what businesses were charged.",
           [("", m["revenue_usd"])])
    metric("mia_unallocated_revenue_usd", "gauge", "Revenue no buyback has claimed yet, USD.",
           [("", m["unallocated_revenue_usd"])])
    metric("mia_idle_jobs_processed_total", "counter", "Completed idle jobs (ledger events).",
           [("", m["total_idle_jobs_processed"])])
    metric("mia_buyback_usd_total", "counter", "USD spent on $SERV buybacks.",
           [("", m["total_buyback_usd"])])
    metric("mia_serv_burned_total", "counter", "$SERV burned by buybacks, base units.",
           [("", m["total_serv_burned"])])
    last = m["last_buyback_timestamp"]
    metric("mia_last_buyback_timestamp_seconds", "gauge", "When the last buyback burned.",
           [("", int(last.timestamp()) if last is not None else 0)])
    metric("mia_buyback_active", "gauge", "1 while a buyback is in progress.",
           [("", int(m["active_buyback"] is not None))])
    metric("mia_queue_depth", "gauge", "Job ids waiting in the Redis queue.",
           [(f'{{kind="{_label(k)}"}}', v) for k, v in m["queue_depth"].items() if v is not None])
    metric("mia_active_miners", "gauge",
           f"Miners active in the last {ACTIVE_MINER_WINDOW_S} s.", [("", m["active_miners"])])
    metric("mia_jobs", "gauge", "Jobs by kind and status.",
           [(f'{{kind="{_label(k)}",status="{_label(s)}"}}', n) for k, by in m["jobs"].items()
            for s, n in sorted(by.items())])
    d = m["token_drift"]
    window = f"jobs completed in the last {d['window_s']} s that carried a miner's count"
    metric("mia_output_tokens_reported", "gauge", f"Output tokens miners reported, {window}.",
           [("", d["reported_tokens"])])
    metric("mia_output_tokens_counted", "gauge", f"Output tokens the server counted, {window}.",
           [("", d["counted_tokens"])])
    metric("mia_miners_overreporting", "gauge",
           f"Miners whose reports exceed {d['over_pct']} % of our count, {window}.",
           [("", d["miners_over"])])
    worst = [(f'{{miner="{_label(w["miner"])}"}}', w) for w in d["worst"]]
    metric("mia_miner_output_tokens_reported", "gauge",
           f"Reported output tokens of the {DRIFT_TOP} worst over-reporting miners.",
           [(labels, w["reported_tokens"]) for labels, w in worst])
    metric("mia_miner_output_tokens_counted", "gauge",
           "Our count of the same miners' output tokens.",
           [(labels, w["counted_tokens"]) for labels, w in worst])
    if m.get("redis_round_trip_seconds") is not None:
        metric("mia_redis_round_trip_seconds", "gauge", "One PING to Redis at this scrape.",
               [("", round(m["redis_round_trip_seconds"], 6))])
    return "\n".join(lines) + "\n"
