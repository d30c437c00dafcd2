"""The process's Prometheus metrics (prometheus_client) and the small functions the rest of the
code calls to feed them. Label values come from fixed sets here, never from callers' input.

Multiprocess: with PROMETHEUS_MULTIPROC_DIR set before this module is imported (`mia serve`
and `mia worker` do it, app/observability/multiproc.py), every value lives in an mmap file of
its process and /metrics adds up all processes' files (counters and histograms summed, the
live gauges summed over live processes)."""

from __future__ import annotations

import os
import time
from datetime import UTC
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, values

from app.observability import tracing

ENABLED = False  # set by configure(): METRICS_ENABLED, once the metrics are built

# seconds; a long-poll may hold GET /job/next up to MINER_MAX_WAIT_S (30 s)
HTTP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STEP_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 1800)

KINDS = frozenset({"chat", "idle"})
LEASE_OUTCOMES = frozenset({"completed", "expired", "released", "rejected"})
BUYBACK_STEPS = frozenset({"run"})  # one run of the worker's buyback task
RPC_METHODS = frozenset({
    "eth_blockNumber", "eth_call", "eth_chainId", "eth_estimateGas", "eth_gasPrice",
    "eth_getBalance", "eth_getBlockByNumber", "eth_getCode", "eth_getLogs",
    "eth_getTransactionByHash", "eth_getTransactionCount", "eth_getTransactionReceipt",
    "eth_maxPriorityFeePerGas", "eth_feeHistory", "eth_sendRawTransaction", "net_version"})
RUNPOD_CALLS = frozenset({"run", "status", "cancel", "health", "submit", "purge"})

# Built by build(), once per process and after the multiprocess directory is known: a metric's
# storage (in-process or an mmap file) is chosen when it is made.
http_duration: Histogram
dispatch: Histogram
end_to_end: Histogram
first_token: Histogram
lease_outcomes: Counter
buyback_steps: Histogram
chain_rpc: Histogram
runpod_calls: Histogram
db_pool: Gauge
long_polls: Gauge
_built = False


_pid = os.getpid()


def _current_pid() -> int:
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def build() -> None:
    global http_duration, dispatch, end_to_end, first_token, lease_outcomes, buyback_steps
    global chain_rpc, runpod_calls, db_pool, long_polls, _built
    if _built:
        return
    chosen = values.get_value_class()  # PROMETHEUS_MULTIPROC_DIR, read now
    if chosen is not values.MutexValue:
        # multiprocess: the client asks os.getpid() (a system call) on every increment to notice
        # a fork; the pid is kept here instead and renewed in a forked child
        chosen = values.MultiProcessValue(process_identifier=_current_pid)
    values.ValueClass = chosen
    http_duration = Histogram(
        "mia_http_request_duration_seconds", "HTTP requests by route template, method and status "
        "class.", ["route", "method", "status"], buckets=HTTP_BUCKETS)
    dispatch = Histogram("mia_job_dispatch_seconds", "Queued to leased (first lease), by job kind.",
                         ["kind"], buckets=JOB_BUCKETS)
    end_to_end = Histogram("mia_job_end_to_end_seconds", "Created to completed, by job kind.",
                           ["kind"], buckets=JOB_BUCKETS)
    first_token = Histogram("mia_stream_first_token_seconds", "A streamed chat's request to the "
                            "first token sent to the client.", buckets=JOB_BUCKETS)
    lease_outcomes = Counter("mia_lease_outcomes_total", "Leases ended, by kind and outcome "
                             "(completed, expired, released, rejected).", ["kind", "outcome"])
    buyback_steps = Histogram("mia_buyback_step_seconds", "Buyback task runs of the worker, by "
                              "step and outcome (ok, wait, error).", ["step", "outcome"], buckets=STEP_BUCKETS)
    chain_rpc = Histogram("mia_chain_rpc_seconds", "JSON-RPC calls to the chain by method and "
                          "outcome.", ["method", "outcome"], buckets=CALL_BUCKETS)
    runpod_calls = Histogram("mia_runpod_call_seconds", "RunPod API calls by call and outcome.",
                             ["call", "outcome"], buckets=CALL_BUCKETS)
    db_pool = Gauge("mia_db_pool_connections", "Database connections per pool (sqlalchemy, "
                    "asyncpg) and state (in_use, size), summed over live processes.",
                    ["pool", "state"], multiprocess_mode="livesum")
    long_polls = Gauge("mia_long_polls_open", "Miners' long-polls open now, over live processes.",
                       multiprocess_mode="livesum")
    # Every known label set exists from the start, at zero: rate() and the alerts see a series
    # that has not moved yet instead of none at all.
    for kind in KINDS:
        for outcome in LEASE_OUTCOMES:
            lease_outcomes.labels(kind, outcome)
        dispatch.labels(kind)
        end_to_end.labels(kind)
    for outcome in ("ok", "wait", "error"):
        buyback_steps.labels("run", outcome)
    for outcome in ("ok", "error"):
        chain_rpc.labels("eth_getBlockByNumber", outcome)  # the head, for /health
        runpod_calls.labels("status", outcome)
    _built = True


def _one_of(value: str, allowed: frozenset[str], other: str = "other") -> str:
    return value if value in allowed else other


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    if ENABLED:
        http_duration.labels(route, method, f"{status // 100}xx").observe(seconds)


def observe_dispatch(kind: str, seconds: float) -> None:
    if ENABLED:
        dispatch.labels(_one_of(kind, KINDS)).observe(max(seconds, 0.0))


def observe_end_to_end(kind: str, seconds: float) -> None:
    if ENABLED:
        end_to_end.labels(_one_of(kind, KINDS)).observe(max(seconds, 0.0))


def observe_first_token(seconds: float) -> None:
    if ENABLED:
        first_token.observe(max(seconds, 0.0))


def first_token_timer() -> Any:
    """A callable that observes, on its first call only, the time since it was made."""
    start = time.perf_counter()
    done = False

    def first() -> None:
        nonlocal done
        if not done:
            done = True
            observe_first_token(time.perf_counter() - start)
    return first


def observe_dispatched(kind: str, now: Any, leased: Any) -> None:
    """First deliveries among leased rows (attempts == 1): queued (created_at) to leased (now)."""
    if ENABLED or tracing.enabled():
        kind = kind.split("_")[0]  # a table name (chat_jobs) names its kind too
        now = _aware(now)
        for attempts, created_at, job_id in leased:
            if attempts == 1 and created_at is not None:
                observe_dispatch(kind, (now - _aware(created_at)).total_seconds())
            tracing.record("leased", kind, job_id, attempt=int(attempts))


def _aware(moment: Any) -> Any:
    """Stored datetimes are naive UTC (app/models.py); a naive one is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def observe_answered(kind: str, job: Any) -> None:
    """A completed job its client waited for: created to completed."""
    if (ENABLED and getattr(job, "status", None) == "completed"
            and getattr(job, "completed_at", None) is not None
            and getattr(job, "created_at", None) is not None):
        observe_end_to_end(kind, (_aware(job.completed_at) - _aware(job.created_at))
                           .total_seconds())


def count_lease_outcome(kind: str, outcome: str, n: int = 1) -> None:
    if ENABLED and n > 0:
        lease_outcomes.labels(_one_of(kind, KINDS), _one_of(outcome, LEASE_OUTCOMES)).inc(n)


@contextmanager
def _timed(histogram: Histogram, name: str) -> Iterator[None]:
    if not ENABLED:
        yield
        return
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except Exception as exc:
        # a deferral (arq's Retry raised without a cause: a buyback waiting on its schedule)
        # is not a failure
        if type(exc).__name__ == "Retry" and exc.__cause__ is None:
            outcome = "wait"
        raise
    finally:
        histogram.labels(name, outcome).observe(time.perf_counter() - start)


def time_buyback_step(step: str) -> Any:
    """with time_buyback_step("swap"): ...  (an exception counts as outcome="error")"""
    return _timed(buyback_steps, _one_of(step, BUYBACK_STEPS, "step"))


def time_runpod_call(call: str) -> Any:
    return _timed(runpod_calls, _one_of(call, RUNPOD_CALLS))


async def timed_runpod(call: str, awaitable: Any) -> Any:
    """await timed_runpod("status", http.request(...)): the call's latency and outcome."""
    with time_runpod_call(call):
        return await awaitable


def observe_chain_rpc(method: str, seconds: float, ok: bool) -> None:
    if ENABLED:
        chain_rpc.labels(_one_of(method, RPC_METHODS), "ok" if ok else "error").observe(seconds)


@contextmanager
def long_poll_open() -> Iterator[None]:
    if not ENABLED:
        yield
        return
    long_polls.inc()
    try:
        yield
    finally:
        long_polls.dec()


_pool_at = 0.0
POOL_EVERY_S = 1.0  # the pool gauges are refreshed at most this often per process


def refresh_pools(db: Any) -> None:
    """The database pools' use, from the request path at most once a second per process."""
    global _pool_at
    now = time.monotonic()
    if not ENABLED or now - _pool_at < POOL_EVERY_S:
        return
    _pool_at = now
    pool = db.engine.pool
    if hasattr(pool, "checkedout"):
        db_pool.labels("sqlalchemy", "in_use").set(pool.checkedout())
        db_pool.labels("sqlalchemy", "size").set(pool.size())
    pg = getattr(db, "pg", None)
    if pg is not None:
        db_pool.labels("asyncpg", "in_use").set(pg.get_size() - pg.get_idle_size())
        db_pool.labels("asyncpg", "size").set(pg.get_max_size())
