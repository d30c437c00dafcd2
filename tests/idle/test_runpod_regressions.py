"""Regressions in the RunPod flow: seed rows resume, giving up cancels, failed runs are
costed, claims nobody can run go back to miners."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from app.idle import runpod_flow
from app.models import IdleJob, JobStatus, utcnow
from app.runpod import build_input
from tests.idle.support import next_idle, runpod_settings, submit
from tests.support.harness import running_app

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def _processing_job(api, **values) -> int:  # type: ignore[no-untyped-def]
    key = await api.api_key("outside-co", "idle")
    created = await submit(api, key, "one two three", max_tokens=8)
    job_id = int(created["job_id"])
    async with api.ctx.db.transaction() as s:
        await s.execute(update(IdleJob).where(IdleJob.id == job_id).values(
            status=JobStatus.processing, processed_by="runpod", lease_id=None,
            lease_expires_at=utcnow() - timedelta(seconds=1), **values))
    return job_id


async def test_runpod_job_id_without_submitted_at_is_resumed(settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    """A seed 'processing' row can carry a runpod_job_id but no runpod_submitted_at (the column
    is new): the run must not die on an assert, over and over, until the tries run out."""
    settings = settings_factory(**runpod_settings(runpod_standin))
    async with running_app(settings) as api:
        client = runpod_flow.make_client(settings)
        assert client is not None
        try:
            rp_id = await client.submit(build_input("one two three", 8))
            job_id = await _processing_job(api, runpod_job_id=rp_id, runpod_submitted_at=None)
            result = await runpod_flow.run(api.ctx, client, job_id)
            assert result.outcome is runpod_flow.Outcome.completed, result
            assert runpod_standin.state.stats.submitted == 1  # resumed, not submitted again
        finally:
            await client.aclose()


async def test_giving_up_cancels_the_runpod_job_still_running(settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    """Out of tries while a RunPod job is stored (workers died mid-wait): the job is failed AND
    the RunPod job is cancelled, or it runs on (and bills) with nobody waiting for it."""
    runpod_standin.set_mode(slow=True)
    settings = settings_factory(**runpod_settings(runpod_standin, runpod_max_tries=3))
    async with running_app(settings) as api:
        client = runpod_flow.make_client(settings)
        assert client is not None
        try:
            rp_id = await client.submit(build_input("slow", 8))
            job_id = await _processing_job(api, runpod_job_id=rp_id, runpod_submitted_at=utcnow(),
                                           runpod_attempts=3)
            result = await runpod_flow.run(api.ctx, client, job_id)
            assert result.outcome is runpod_flow.Outcome.failed
            assert runpod_standin.state.stats.cancel_requests == 1
        finally:
            await client.aclose()


async def test_runpod_cost_is_recorded_when_a_finished_job_fails(settings_factory, runpod_standin):  # type: ignore[no-untyped-def]
    """RunPod bills a job that ran and answered with an unusable output; our books must too."""
    runpod_standin.set_mode(malformed=True)
    settings = settings_factory(**runpod_settings(runpod_standin))
    async with running_app(settings) as api:
        client = runpod_flow.make_client(settings)
        assert client is not None
        try:
            job_id = await _processing_job(api)
            result = await runpod_flow.run(api.ctx, client, job_id)
            assert result.outcome is runpod_flow.Outcome.failed
            async with api.ctx.db.sessions() as s:
                row = await s.get(IdleJob, job_id)
            assert row.failure_reason and "malformed output" in row.failure_reason
            assert row.runpod_execution_ms is not None and row.runpod_cost_usd is not None
        finally:
            await client.aclose()


async def test_claims_left_when_runpod_is_unconfigured_go_back_to_miners(settings_factory):  # type: ignore[no-untyped-def]
    """Jobs claimed for RunPod while it was configured (or by an API configured differently
    from the worker) must not sit in 'processing' forever once no worker can run them: the
    dispatcher hands expired claims back to the miners' queue."""
    settings = settings_factory()
    assert not settings.runpod_configured
    async with running_app(settings) as api:
        job_id = await _processing_job(api, runpod_job_id="gone-with-the-old-config",
                                       runpod_submitted_at=utcnow(), runpod_attempts=3)
        await runpod_flow.dispatch_stale(api.ctx)
        async with api.ctx.db.sessions() as s:
            row = await s.get(IdleJob, job_id)
        assert row.status == JobStatus.queued and row.lease_id is None
        assert (row.runpod_job_id, row.runpod_attempts, row.processed_by) == (None, 0, None)
        miner = await api.miner()
        job = await next_idle(miner, wait=1)
        assert job is not None and job["job_id"] == str(job_id)
