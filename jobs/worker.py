"""The arq worker: WHEN and HOW OFTEN. What each task does lives in app services.

Tasks take ids only; resources are opened once in `startup` by app.context.open_context (the
same function the API's lifespan uses) and kept in ctx["app"], with ctx["runpod"]. Run it with
`mia worker`, `python -m jobs.worker` or `arq jobs.worker.WorkerSettings`: all three take their
settings from the environment (app/config.py) through worker_settings().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

from arq import Retry, cron, func
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.exceptions import RedisError

from app import observability
from app.config import Settings
from app.context import AppContext, arq_queue_name, open_context
from app.idle import runpod_flow
from app.idle.dispatch import PROCESS_IDLE_JOB
from app.ops import maintenance, metrics
from app.treasury import repository as treasury_repository
from app.treasury.dispatch import RUN_BUYBACK
from jobs import auth_tasks, deposit_tasks, idempotency_tasks, retention_tasks, treasury_tasks

log = logging.getLogger("jobs.worker")
EVERY_SECOND = set(range(60))
EVERY_2S = set(range(0, 60, 2))
EVERY_10S = set(range(0, 60, 10))
ARQ_MAX_TRIES = 20  # a backstop only: RUNPOD_MAX_TRIES, counted in the DB, decides
REDIS_BACKOFF_FIRST_S = 0.5  # while Redis is down: the first retry after; then doubling up to
# WORKER_REDIS_BACKOFF_MAX_S


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or Settings()
    observability.configure(settings, service="mia-worker")
    stack = contextlib.AsyncExitStack()
    ctx["resources"] = stack
    ctx["app"] = await stack.enter_async_context(open_context(settings))  # as the API does
    ctx["runpod"] = runpod_flow.make_client(settings)
    if ctx["runpod"] is not None:
        stack.push_async_callback(ctx["runpod"].aclose)
    log.info("worker ready: queue=%s runpod=%s", arq_queue_name(settings),
             "configured" if ctx["runpod"] is not None else "not configured")


async def shutdown(ctx: dict[str, Any]) -> None:
    stack: contextlib.AsyncExitStack | None = ctx.get("resources")
    if stack is not None:
        await stack.aclose()


# ------------------------------------------------------------------ tasks


async def process_idle_job(ctx: dict[str, Any], job_id: int) -> str:
    """Run a claimed idle job on RunPod; transient errors come back via arq's retry."""
    client = ctx["runpod"]
    if client is None:
        raise RuntimeError("RunPod is not configured (RUNPOD_API_KEY, RUNPOD_ENDPOINT_ID)")
    app: AppContext = ctx["app"]
    origin = await observability.origin_of(app.redis, app.settings.redis_prefix, "idle", job_id)
    with (observability.bound(request_id=origin, job_id=job_id),  # its log lines name the job
          observability.job_span("idle on RunPod", "idle", job_id)):
        result = await runpod_flow.run(app, client, job_id)
    if result.outcome is runpod_flow.Outcome.retry:
        raise Retry(defer=result.defer_s)
    return result.outcome.value


async def reap_leases(ctx: dict[str, Any]) -> dict[str, int]:
    return await maintenance.reap_leases(ctx["app"])


async def reconcile_queue(ctx: dict[str, Any]) -> int:
    return await maintenance.reconcile_queue(ctx["app"])


async def dispatch_stale_idle_jobs(ctx: dict[str, Any]) -> int:
    """Idle jobs no miner took within IDLE_TO_RUNPOD_AFTER_S go to RunPod; claims whose worker
    died are picked up again."""
    return await runpod_flow.dispatch_stale(ctx["app"])


async def check_revenue(ctx: dict[str, Any]) -> str:
    """Extension point for the buyback issue (the treasury fills it in): today it refreshes
    the seed's SystemMetrics from the ledger and logs the revenue no buyback has claimed."""
    app: AppContext = ctx["app"]
    async with app.db.transaction() as session:
        await metrics.refresh_system_metrics(session)
    async with app.db.sessions() as session:
        amount, events = await treasury_repository.unallocated_usd(session)
    log.info("unallocated idle revenue: %s USD in %d event(s) (threshold %s USD)", amount,
             events, app.settings.buyback_threshold_usd)
    return str(amount)


# (coroutine, cron schedule); cron job names get the Redis prefix in create_worker
CRONS: list[tuple[Any, dict[str, Any]]] = [
    (reap_leases, dict(second=EVERY_2S, run_at_startup=True)),
    (reconcile_queue, dict(second=EVERY_10S, run_at_startup=True)),
    (dispatch_stale_idle_jobs, dict(second=EVERY_SECOND, run_at_startup=True)),
    (check_revenue, dict(second={0})),
    (treasury_tasks.check_buyback_threshold, dict(second=EVERY_SECOND, run_at_startup=True)),
    (deposit_tasks.scan_deposits, dict(second=EVERY_SECOND, run_at_startup=True)),
    (auth_tasks.prune_expired_tokens, dict(minute=auth_tasks.PRUNE_MINUTE, second={0})),
    (idempotency_tasks.prune_idempotency_keys,
     dict(minute=idempotency_tasks.PRUNE_MINUTE, second={0})),
    (retention_tasks.erase_expired_content,
     dict(second=retention_tasks.RETENTION_SECOND, run_at_startup=True)),
]


FUNCTIONS = [func(process_idle_job, name=PROCESS_IDLE_JOB, keep_result=0,
                  max_tries=ARQ_MAX_TRIES),
             func(treasury_tasks.run_buyback, name=RUN_BUYBACK, keep_result=0,
                  max_tries=treasury_tasks.BUYBACK_MAX_TRIES)]


def worker_settings(settings: Settings) -> dict[str, Any]:
    """arq's worker settings, all derived from Settings: the queue under REDIS_PREFIX (the one the
    API enqueues to), cron names under it too, the Redis URL, and the limits."""
    prefix = settings.redis_prefix
    return dict(
        functions=FUNCTIONS,
        cron_jobs=[cron(f, name=f"{prefix}:cron:{f.__name__}", **schedule)
                   for f, schedule in CRONS],
        on_startup=startup, on_shutdown=shutdown,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        queue_name=arq_queue_name(settings),
        ctx={"settings": settings},
        max_jobs=settings.worker_max_jobs,
        # keep a run alive past RunPod's whole timeout, plus polling and DB slack
        job_timeout=settings.runpod_timeout_s + 60,
        keep_result=0,
        poll_delay=0.2,
    )


class MiaWorker(Worker):
    """arq's Worker with a shutdown that survives its own cancellations.

    On SIGTERM arq cancels every job task, then gathers them without return_exceptions. A task
    cancelled inside the function is caught by arq (the hand-back in runpod_flow runs there), but
    one cancelled in arq's own bookkeeping around it (the Redis pipeline before a cron run, the
    shielded finish after it) re-raises in that gather: on_shutdown is skipped and the process
    exits 1. With crons every second, a deploy hits that window now and then."""

    # arq's poll loop lets any Redis error out of main(): a 3 s Redis restart ended `mia
    # worker` for good, and buybacks, the RunPod hand-off and pruning stopped with it. Here a
    # failed poll waits (doubling, up to WORKER_REDIS_BACKOFF_MAX_S) and polls again; redis-py opens
    # new connections on the next command. Jobs already running go on; a job whose start
    # failed stays in arq's queue for the next poll.
    _redis_down_since: float | None = None
    _redis_backoff_s: float = REDIS_BACKOFF_FIRST_S

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if self._redis_down_since is None:
                self._redis_down_since = now
                self._redis_backoff_s = REDIS_BACKOFF_FIRST_S
            log.warning("Redis unavailable (%s) for %.1f s; the worker polls again in %.1f s",
                        type(exc).__name__, now - self._redis_down_since, self._redis_backoff_s)
            await asyncio.sleep(self._redis_backoff_s)
            settings: Settings = self.ctx["settings"]
            self._redis_backoff_s = min(2 * self._redis_backoff_s,
                                        settings.worker_redis_backoff_max_s)
            return
        if self._redis_down_since is not None:
            log.warning("Redis is back after %.1f s; the worker goes on",
                        time.monotonic() - self._redis_down_since)
            self._redis_down_since = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except (RedisError, OSError):
            # arq counted the job (and took a semaphore slot) before its Redis round trips;
            # one that failed there never starts, so give both back or they leak for good.
            self.job_counter -= 1
            self.sem.release()
            raise

    async def close(self) -> None:
        if self._handle_signals and self.tasks:  # with signals off, arq's close cancels first
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            self.tasks.clear()  # all done: nothing left for arq's gather to re-raise
        await super().close()


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """What `mia worker` runs; `arq jobs.worker.WorkerSettings` runs the same settings."""
    return MiaWorker(**{**worker_settings(settings), **overrides})


def __getattr__(name: str) -> Any:
    # `arq jobs.worker.WorkerSettings`: read from the environment when arq asks for it, so the
    # arq CLI and `mia worker` listen on the same prefixed queue with the same settings.
    if name == "WorkerSettings":
        return worker_settings(Settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> int:
    settings = Settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per RunPod status poll
    create_worker(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
