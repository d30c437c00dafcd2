"""Operating MIA: Prometheus metrics, structured logs with request ids. One face: the rest of
the code calls these small functions and knows nothing of prometheus_client or log formats.

    configure(settings)                  once per process (API lifespan, worker startup)
    middleware(settings, db_of)          the ASGI middleware of create_app
    render_metrics(settings)             the Prometheus text of every process
    observe_* / count_* / time_*         feed the histograms and counters
    set_fields(...) / bound(...)         what the log lines are about (request, job, miner)
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.middleware import Middleware

from app.observability import exposition, logs, metrics, multiproc, tracing
from app.observability.context import bound, current, new_request_id, request_id, set_fields
from app.observability.http import RequestMiddleware
from app.observability.metrics import (count_lease_outcome, first_token_timer, long_poll_open,
                                       observe_chain_rpc, observe_dispatch, observe_dispatched,
                                       observe_answered, observe_end_to_end, observe_first_token, refresh_pools,
                                       time_buyback_step, time_runpod_call, timed_runpod)

__all__ = ["bound", "configure", "count_lease_outcome", "current", "first_token_timer",
           "instrument_web3", "observe_dispatched", "timed_runpod", "origin_of",
           "remember_origin",
           "long_poll_open", "middleware", "new_request_id", "observe_chain_rpc",
           "observe_dispatch", "observe_end_to_end", "observe_first_token", "prepare_process",
           "refresh_pools", "render_metrics", "request_id", "set_fields", "setup_logging",
           "tag_error", "time_buyback_step", "time_runpod_call"]


def instrument_web3(w3: Any) -> Any:
    """mia_chain_rpc_seconds for every call of this AsyncWeb3 (web3 is imported only here)."""
    from app.observability.rpc import instrument

    return instrument(w3)


def setup_logging(settings: Any) -> None:
    logs.setup(settings.log_format, settings.log_level)


def uvicorn_log_config(settings: Any) -> dict[str, Any]:
    return logs.uvicorn_log_config(settings.log_format, settings.log_level)


def prepare_process(settings: Any) -> str:
    """`mia serve` and `mia worker`, before any process of theirs builds a metric: the
    multiprocess directory (PROMETHEUS_MULTIPROC_DIR, else a private new one), cleaned of dead
    processes' files and exported to the environment the server's workers inherit."""
    from app.config import export_multiproc_dir  # (logs.py stays light: uvicorn's workers load it)

    path = multiproc.prepare(settings.prometheus_multiproc_dir)
    export_multiproc_dir(path)
    return path


def configure(settings: Any, service: str = "mia-api") -> None:
    """Each process as it starts (API lifespan, worker startup)."""
    tracing.configure(settings.otel_exporter_otlp_endpoint, service)
    if settings.metrics_enabled:
        metrics.build()
    metrics.ENABLED = settings.metrics_enabled
    multiproc.forget_dead(settings.prometheus_multiproc_dir)


def middleware(settings: Any) -> Middleware:
    """The outermost middleware of create_app: request ids, HTTP histograms, pool gauges."""
    return Middleware(RequestMiddleware, record=settings.metrics_enabled, on_end=_pools)


def _pools(scope: dict[str, Any]) -> None:
    c = getattr(scope["app"].state, "ctx", None)  # the app's context, once its lifespan opened it
    if c is not None:
        refresh_pools(c.db)


def render_metrics(settings: Any) -> str:
    return exposition.render(settings.prometheus_multiproc_dir)


def job_span(name: str, kind: str, ident: object) -> Any:
    """with job_span("idle.runpod", "idle", job_id): a span in that job's trace (if tracing)."""
    return tracing.span(name, kind, ident)


def trace_results(kind: str, job_ids: list[str]) -> None:
    """Results stored for these jobs: a span each, in each job's trace."""
    if tracing.enabled():
        for job_id in job_ids:
            tracing.record("result stored", kind, job_id)


def tag_error(request: Any, err: Any) -> None:
    """An error answer carries its request id in its body and header (app/main.py renders it;
    a 500 is rendered outside the middleware, so the header is set here too)."""
    rid = getattr(getattr(request, "state", None), "request_id", None) or request_id()
    if rid is not None:
        # copies: an error object may be raised more than once
        err.extra = {**err.extra, "request_id": rid}
        err.headers = {**err.headers, "X-Request-Id": rid}


ORIGIN_TTL_S = 86_400  # a job's request id is kept this long for the worker's log lines


def _origin_key(prefix: str, kind: str, job_id: object) -> str:
    return f"{prefix}:origin:{kind}:{job_id}"


async def remember_origin(redis: Any, prefix: str, kind: str, job_id: object) -> None:
    """The request that made a job, for the log lines of whoever handles it later (the worker):
    after commit, best effort (a lost one costs a log field, never the job)."""
    rid = request_id()
    if rid is not None:
        try:
            await redis.set(_origin_key(prefix, kind, job_id), rid, ex=ORIGIN_TTL_S)
        except Exception:  # noqa: BLE001 - Redis down: the worker logs the job id alone
            pass


async def origin_of(redis: Any, prefix: str, kind: str, job_id: object) -> str | None:
    try:
        value = await redis.get(_origin_key(prefix, kind, job_id))
    except Exception:  # noqa: BLE001
        return None
    return value.decode() if isinstance(value, bytes) else value


logging.getLogger(__name__).addHandler(logging.NullHandler())
