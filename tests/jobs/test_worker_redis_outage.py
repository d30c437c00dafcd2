"""M5 (issue 23): `mia worker` survives a Redis outage. It used to exit on a 3 s Redis restart
and stay down, and with it buybacks, the RunPod hand-off, the lease reaper and pruning."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.localredis import LocalRedis
from tests.jobs.test_worker_crash import ROOT, stop
from tests.support.harness import running_app, until


def _mia_worker(settings, log: Path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "DATABASE_", "REDIS_"))}
    env.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
               REDIS_PREFIX=settings.redis_prefix, LOG_LEVEL="INFO",
               # polls every 0.5 s then every 1 s while Redis is down (30 s at most in
               # production): the test waits on the restart, not on a doubled back-off
               WORKER_REDIS_BACKOFF_MAX_S="1")
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _log(path: Path) -> str:
    return path.read_text(errors="replace")


@pytest.mark.timeout(120)
async def test_the_worker_survives_a_redis_restart(settings_factory, tmp_path):  # type: ignore[no-untyped-def]
    redis = LocalRedis().start()  # a private redis-server, ours to stop
    log = tmp_path / "worker.log"
    worker = None
    try:
        settings = settings_factory(redis_url=redis.url, run_maintenance_in_api=False,
                                    lease_seconds=1)
        worker = _mia_worker(settings, log)
        await until(lambda: asyncio.sleep(0, "worker ready" in _log(log)), 30, 0.1)
        async with running_app(settings) as api:
            key = await api.api_key()
            miner, other = await api.miner(), await api.miner()
            assert (await api.chat(key)).status_code == 202
            job = await miner.next_job()
            assert job is not None  # leased for 1 s, never answered: the reaper's work

            redis.stop()  # a 3 s restart, as a managed Redis's failover or a redeploy
            await asyncio.sleep(3)
            redis = LocalRedis(port=redis.port).start()

            assert worker.poll() is None, _log(log)
            # the worker's lease reaper put the job back (in the DB and in the fresh Redis)
            again = None

            async def redelivered() -> bool:
                nonlocal again
                again = await other.next_job()  # not the miner whose lease ran out
                return again is not None
            await until(redelivered, 60, 0.2)  # the worker backs off (0.5 s, then 1 s) while Redis is down
            assert again is not None and again["job_id"] == job["job_id"]
            assert again["attempt"] == 2
        assert worker.poll() is None, _log(log)
        text = _log(log)
        assert "Redis unavailable" in text and "Redis is back" in text, text
        # WORKER_REDIS_BACKOFF_MAX_S held: 0.5 s, then 1 s, never doubled to 2 s in a 3 s outage
        assert "polls again in 1.0 s" in text and "polls again in 2.0 s" not in text, text
    finally:
        if worker is not None:
            stop(worker)
        redis.stop()
