"""The worker killed (SIGKILL) while a job is in RunPod, then restarted: the new worker resumes
waiting on the same RunPod job; the job completes once and its revenue is recorded once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import Settings
from app.models import IdleJob
from tests.idle.support import clear_arq_keys, events_for, get_job, runpod_settings, submit
from tests.support.harness import running_app, until

ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "DATABASE_", "REDIS_"))}
    env.update(
        DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
        REDIS_PREFIX=settings.redis_prefix, RUNPOD_BASE_URL=settings.runpod_base_url,
        RUNPOD_API_KEY=settings.runpod_api_key.get_secret_value(),  # type: ignore[union-attr]
        RUNPOD_ENDPOINT_ID=str(settings.runpod_endpoint_id),
        RUNPOD_TIMEOUT_S=str(settings.runpod_timeout_s), RUNPOD_HOLD_S=str(settings.runpod_hold_s),
        RUNPOD_MAX_TRIES=str(settings.runpod_max_tries),
        IDLE_TO_RUNPOD_AFTER_S=str(settings.idle_to_runpod_after_s), LOG_LEVEL="INFO")
    return env


def start_worker(settings: Settings, log: Path, *, via_cli: bool = False) -> subprocess.Popen[bytes]:
    """`python -m jobs.worker`, or the same through `mia worker` (app/cli.py)."""
    out = log.open("ab")
    command = ["-m", "app.cli", "worker"] if via_cli else ["-m", "jobs.worker"]
    return subprocess.Popen([sys.executable, *command], cwd=ROOT,
                            env=worker_env(settings), stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
async def test_worker_killed_mid_job_then_restarted(settings_factory, runpod_standin, tmp_path):  # type: ignore[no-untyped-def]
    runpod_standin.set_mode(processing_s=5.0)  # long enough to be killed while RunPod works
    settings = settings_factory(**runpod_settings(runpod_standin, idle_to_runpod_after_s=0,
                                                  runpod_timeout_s=30, runpod_hold_s=1.5),
                                run_maintenance_in_api=False)
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    second = None
    try:
        async with running_app(settings) as api:
            key = await api.api_key("outside-co", "idle")
            created = await submit(api, key, "survive a crash", max_tokens=8)
            job_id = int(created["job_id"])

            async def in_runpod() -> bool:
                async with api.ctx.db.sessions() as s:
                    row = (await s.execute(select(IdleJob.runpod_job_id).where(
                        IdleJob.id == job_id))).scalar()
                return row is not None
            await until(in_runpod, 30, 0.02)
            first.send_signal(signal.SIGKILL)  # mid-job: RunPod is still working on it
            first.wait(10)
            body = await get_job(api, key, created["job_id"])
            assert body["status"] == "processing"

            second = start_worker(settings, log, via_cli=True)
            body = await get_job(api, key, created["job_id"], wait=1)

            async def done() -> bool:
                nonlocal body
                body = await get_job(api, key, created["job_id"], wait=1)
                return body["status"] in ("completed", "failed")
            await until(done, 60)

            assert body["status"] == "completed", (body, log.read_text()[-3000:])
            assert body["result"] == "Stand-in answer to: survive a crash"
            events = await events_for(api, created["job_id"])
            assert len(events) == 1 and events[0].source == "runpod"
            async with api.ctx.db.sessions() as s:
                row = await s.get(IdleJob, job_id)
            assert row.runpod_attempts == 2  # the killed run and the one that resumed
            # resumed on the same RunPod job, never submitted twice
            assert runpod_standin.state.stats.submitted == 1
            await asyncio.sleep(1.5)  # anything still scheduled runs and finds nothing to do
            assert len(await events_for(api, created["job_id"])) == 1
    finally:
        stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)
        clear_arq_keys(settings)
    text = log.read_text()
    assert "process_idle_job" in text
    assert runpod_standin.api_key not in text  # secrets never logged


@pytest.mark.timeout(120)
async def test_worker_stopped_mid_job_hands_it_back(settings_factory, runpod_standin, tmp_path):  # type: ignore[no-untyped-def]
    """SIGTERM (a deploy): the run gives its claim back and the next worker resumes at once."""
    runpod_standin.set_mode(processing_s=3.0)
    settings = settings_factory(**runpod_settings(runpod_standin, idle_to_runpod_after_s=0,
                                                  runpod_timeout_s=30, runpod_hold_s=30),
                                run_maintenance_in_api=False)
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    second = None
    try:
        async with running_app(settings) as api:
            key = await api.api_key("outside-co", "idle")
            created = await submit(api, key, "a deploy in the middle", max_tokens=8)
            job_id = int(created["job_id"])

            async def in_runpod() -> bool:
                async with api.ctx.db.sessions() as s:
                    return (await s.execute(select(IdleJob.runpod_job_id).where(
                        IdleJob.id == job_id))).scalar() is not None
            await until(in_runpod, 30, 0.02)
            stop(first)  # SIGTERM
            assert first.returncode == 0, log.read_text()[-4000:]
            async with api.ctx.db.sessions() as s:
                row = await s.get(IdleJob, job_id)
            assert row.status == "processing" and row.lease_id is None  # handed back

            second = start_worker(settings, log)
            body = await get_job(api, key, created["job_id"], wait=20)
            # well within RUNPOD_HOLD_S=30: the new worker did not wait for a claim to expire
            assert body["status"] == "completed", (body, log.read_text()[-3000:])
            assert len(await events_for(api, created["job_id"])) == 1
            assert runpod_standin.state.stats.submitted == 1
    finally:
        stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)
        clear_arq_keys(settings)
