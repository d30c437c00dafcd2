"""Idle jobs on RunPod via the arq worker, against the local stand-in over real HTTP."""

from __future__ import annotations

import statistics
import time
from decimal import Decimal

import pytest

from app.models import IdleJob
from tests.idle.support import (auth, events_for, get_job, ledger, new_operator, next_idle,
                                operator_token, runpod_settings, running_worker, submit)
from tests.support.harness import running_app, until

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def finished(api, key, job_id, timeout: float = 20.0) -> dict:  # type: ignore[no-untyped-def]
    body: dict = {}

    async def done() -> bool:
        nonlocal body
        body = await get_job(api, key, job_id, wait=1)
        return body["status"] in ("completed", "failed")
    await until(done, timeout)
    return body


async def test_idle_job_through_runpod(any_db, settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    settings = settings_factory(any_db, **runpod_settings(runpod_standin))
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle")
        created = await submit(api, key, "one two three four five", max_tokens=6)
        body = await finished(api, key, created["job_id"])
        assert body["status"] == "completed", body
        assert body["processed_by"] == "runpod"
        assert body["result"] == "Stand-in answer to: one two three"  # six words = six tokens
        assert body["output_tokens"] == 6
        assert Decimal(body["usd_earned"]) == Decimal("0.000012")
        events = await events_for(api, created["job_id"])
        assert [(e.source, e.amount_usd, e.output_tokens) for e in events] == [
            ("runpod", Decimal("0.000012"), 6)]
        async with api.ctx.db.sessions() as s:
            row = await s.get(IdleJob, int(created["job_id"]))
        assert row.runpod_job_id.endswith("-standin") and row.runpod_attempts == 1
        assert row.input_tokens == 5 and row.runpod_execution_ms is not None
        assert row.runpod_cost_usd is not None and row.failure_reason is None
        # a miner can no longer take it
        miner = await api.miner()
        assert await next_idle(miner, wait=0) is None
        assert runpod_standin.state.stats.submitted == 1


async def test_runpod_outcomes(settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    """slow -> cancelled at the timeout; FAILED; malformed output; 5xx then success."""
    settings = settings_factory(**runpod_settings(runpod_standin, runpod_timeout_s=1.5,
                                                  runpod_max_tries=4))
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle")

        runpod_standin.set_mode(slow=True)
        slow = await submit(api, key, "slow")
        body = await finished(api, key, slow["job_id"])
        assert body["status"] == "failed"
        assert "did not finish within 1.5s; cancelled" in body["failure_reason"]
        assert runpod_standin.state.stats.cancel_requests >= 1

        runpod_standin.set_mode(slow=False, fail=True)
        failing = await submit(api, key, "fail")
        body = await finished(api, key, failing["job_id"])
        assert body["status"] == "failed"
        assert "FAILED" in body["failure_reason"] and "simulated worker failure" in body["failure_reason"]

        runpod_standin.set_mode(fail=False, malformed=True)
        bad = await submit(api, key, "malformed")
        body = await finished(api, key, bad["job_id"])
        assert body["status"] == "failed" and "malformed output" in body["failure_reason"]

        runpod_standin.set_mode(malformed=False, flaky_5xx=2)
        flaky = await submit(api, key, "flaky but fine")
        body = await finished(api, key, flaky["job_id"])
        assert body["status"] == "completed", body
        assert body["result"] == "Stand-in answer to: flaky but fine"
        assert runpod_standin.state.stats.flaky_served == 2
        async with api.ctx.db.sessions() as s:
            assert (await s.get(IdleJob, int(flaky["job_id"]))).runpod_attempts == 3

        total, n, statuses = await ledger(api)
        assert n == 1 and statuses == {"failed": 3, "completed": 1}
        assert total == Decimal(body["usd_earned"])
        for job in (slow, failing, bad):
            assert await events_for(api, job["job_id"]) == []


async def test_runpod_down_fails_after_the_last_try(settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    settings = settings_factory(**runpod_settings(runpod_standin, runpod_max_tries=3))
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle")
        runpod_standin.set_mode(flaky_5xx=100)
        created = await submit(api, key)
        body = await finished(api, key, created["job_id"])
        assert body["status"] == "failed"
        assert body["failure_reason"].startswith("RunPod unavailable after 3 tries: RunPod run: HTTP 503")
        assert runpod_standin.state.stats.flaky_served == 3
        assert await events_for(api, created["job_id"]) == []


async def test_operator_sends_a_job_to_runpod_now(settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    operator = new_operator()
    settings = settings_factory(**runpod_settings(runpod_standin, idle_to_runpod_after_s=3600),
                                operator_addresses=[operator.address])
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle")
        miner = await api.miner()
        created = await submit(api, key, "now please")
        path = f"/idle-job/process/{created['job_id']}"

        r = await api.client.post(path, headers=miner.auth)
        assert r.status_code == 403  # miners are not operators
        r = await api.client.get(path)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert "POST" in r.json()["detail"]

        token = await operator_token(api.client, operator)
        r = await api.client.post(path, headers=auth(token))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "processing"
        assert await next_idle(miner, wait=0) is None  # claimed for RunPod: no miner gets it
        body = await finished(api, key, created["job_id"])
        assert body["status"] == "completed" and body["processed_by"] == "runpod"
        r = await api.client.post(path, headers=auth(token))
        assert r.status_code == 409 and r.json()["error"] == "not_queued"
        r = await api.client.post("/idle-job/process/424242", headers=auth(token))
        assert r.status_code == 404
        assert len(await events_for(api, created["job_id"])) == 1


async def test_unconfigured_runpod_is_503_and_jobs_wait_for_miners(settings_factory):  # type: ignore[no-untyped-def]
    operator = new_operator()
    settings = settings_factory(operator_addresses=[operator.address], idle_to_runpod_after_s=0)
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle")
        created = await submit(api, key)
        token = await operator_token(api.client, operator)
        r = await api.client.post(f"/idle-job/process/{created['job_id']}", headers=auth(token))
        assert r.status_code == 503 and r.json()["error"] == "runpod_not_configured"
        miner = await api.miner()
        job = await next_idle(miner, wait=2)
        assert job is not None and job["job_id"] == created["job_id"]


async def test_runpod_round_trip_overhead(settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    """Through the worker with zero RunPod processing: operator POST (enqueue at once) ->
    arq picks it up -> /run -> /status -> completed in the DB -> the waiting client wakes.
    Then the automatic path, which adds IDLE_TO_RUNPOD_AFTER_S and the dispatcher's 1 s tick."""
    n = 30
    runpod_standin.set_mode(processing_s=0.0)
    operator = new_operator()
    settings = settings_factory(**runpod_settings(runpod_standin, idle_to_runpod_after_s=3600),
                                operator_addresses=[operator.address])
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle")
        token = await operator_token(api.client, operator)
        samples = []
        for i in range(n + 1):
            created = await submit(api, key, f"prompt {i}", max_tokens=8)
            started = time.perf_counter()
            r = await api.client.post(f"/idle-job/process/{created['job_id']}", headers=auth(token))
            assert r.status_code == 202
            body = await get_job(api, key, created["job_id"], wait=10)
            assert body["status"] == "completed", body
            if i:  # the first one warms connections up
                samples.append(time.perf_counter() - started)
        median, p95 = statistics.median(samples) * 1000, sorted(samples)[int(n * 0.95) - 1] * 1000
        print(f"\nRunPod round trip through the worker (stand-in, 0 s processing), {n} jobs: "
              f"median {median:.0f} ms, p95 {p95:.0f} ms (arq poll_delay 0.2 s, first status "
              f"poll at once)")
        assert median < 1000

    settings = settings_factory(**runpod_settings(runpod_standin, idle_to_runpod_after_s=0))
    async with running_app(settings) as api, running_worker(settings):
        key = await api.api_key("outside-co", "idle")
        auto = []
        for i in range(10):
            started = time.perf_counter()
            created = await submit(api, key, f"prompt {i}", max_tokens=8)
            assert (await get_job(api, key, created["job_id"], wait=10))["status"] == "completed"
            auto.append(time.perf_counter() - started)
        print(f"automatic path (IDLE_TO_RUNPOD_AFTER_S=0): median "
              f"{statistics.median(auto) * 1000:.0f} ms, dominated by the 1 s dispatcher tick")
