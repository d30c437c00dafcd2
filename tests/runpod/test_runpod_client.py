"""The real RunPodClient over real HTTP against the local stand-in on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from app.runpod import (
    JobStatus,
    RunPodAuthError,
    RunPodClient,
    RunPodJobFailed,
    RunPodMalformedOutput,
    RunPodNotFound,
    RunPodTimeout,
    RunPodTransientError,
    build_input,
)
from app.runpod.standin import StandinServer

FAST = {"poll_initial_s": 0.02, "poll_max_s": 0.1}


@pytest.fixture
async def client(runpod_standin: StandinServer) -> AsyncIterator[RunPodClient]:
    async with RunPodClient(
        runpod_standin.base_url, runpod_standin.api_key, runpod_standin.endpoint_id, request_timeout_s=5
    ) as c:
        yield c


async def test_completed_vllm_shape(client: RunPodClient) -> None:
    res = await client.run_and_wait(build_input("how are you today", 16), timeout_s=5, **FAST)
    assert res.text == "Stand-in answer to: how are you today"
    assert res.input_tokens == 4
    assert res.output_tokens == 7
    assert res.runpod_job_id
    assert isinstance(res.execution_ms, int) and 90 <= res.execution_ms <= 1000
    assert isinstance(res.delay_ms, int) and res.delay_ms >= 0


async def test_completed_text_shape_respects_max_tokens(
    client: RunPodClient, runpod_standin: StandinServer
) -> None:
    runpod_standin.set_mode(shape="text")
    res = await client.run_and_wait(build_input("one two three four five", 5), timeout_s=5, **FAST)
    assert res.text == "Stand-in answer to: one two"
    assert (res.input_tokens, res.output_tokens) == (5, 5)


async def test_status_progresses_through_queue(client: RunPodClient, runpod_standin: StandinServer) -> None:
    runpod_standin.set_mode(queue_s=0.3, processing_s=0.3)
    job_id = await client.submit(build_input("q", 4))
    first = await client.status(job_id)
    assert first.status is JobStatus.IN_QUEUE and first.id == job_id
    await asyncio.sleep(0.4)
    assert (await client.status(job_id)).status is JobStatus.IN_PROGRESS
    res = await client.wait(job_id, timeout_s=5, **FAST)
    assert res.delay_ms is not None and 290 <= res.delay_ms <= 400
    assert res.execution_ms is not None and 290 <= res.execution_ms <= 400


async def test_slow_job_is_cancelled_at_timeout(client: RunPodClient, runpod_standin: StandinServer) -> None:
    runpod_standin.set_mode(slow=True)
    started = time.monotonic()
    with pytest.raises(RunPodTimeout) as info:
        await client.run_and_wait(build_input("slow", 4), timeout_s=0.5, **FAST)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5
    exc = info.value
    assert exc.cancelled is True and exc.runpod_job_id
    assert exc.runpod_job_id in exc.reason
    st = await client.status(exc.runpod_job_id)
    assert st.status is JobStatus.CANCELLED
    assert runpod_standin.state.stats.cancel_requests == 1


async def test_extra_delay_beyond_timeout_times_out(client: RunPodClient, runpod_standin: StandinServer) -> None:
    runpod_standin.set_mode(extra_delay_s=2.0)
    with pytest.raises(RunPodTimeout):
        await client.run_and_wait(build_input("x", 4), timeout_s=0.3, **FAST)


async def test_failed_job_raises_job_failed(client: RunPodClient, runpod_standin: StandinServer) -> None:
    runpod_standin.set_mode(fail=True, fail_error="CUDA out of memory")
    with pytest.raises(RunPodJobFailed) as info:
        await client.run_and_wait(build_input("x", 4), timeout_s=5, **FAST)
    assert info.value.status == "FAILED"
    assert info.value.error == "CUDA out of memory"
    assert "CUDA out of memory" in info.value.reason
    assert info.value.runpod_job_id


async def test_worker_rejects_bad_input(client: RunPodClient) -> None:
    with pytest.raises(RunPodJobFailed, match="prompt"):
        await client.run_and_wait({"messages": []}, timeout_s=5, **FAST)


async def test_runpod_execution_timeout_gives_timed_out(
    client: RunPodClient, runpod_standin: StandinServer
) -> None:
    runpod_standin.set_mode(slow=True)
    with pytest.raises(RunPodJobFailed) as info:
        await client.run_and_wait(build_input("x", 4), timeout_s=5, execution_timeout_ms=200, **FAST)
    assert info.value.status == "TIMED_OUT"


async def test_malformed_output(client: RunPodClient, runpod_standin: StandinServer) -> None:
    runpod_standin.set_mode(malformed=True)
    with pytest.raises(RunPodMalformedOutput) as info:
        await client.run_and_wait(build_input("x", 4), timeout_s=5, **FAST)
    assert info.value.runpod_job_id
    assert "generated" in info.value.reason


async def test_transient_503_on_polls_is_retried(client: RunPodClient, runpod_standin: StandinServer) -> None:
    job_id = await client.submit(build_input("retry me", 8))
    runpod_standin.set_mode(flaky_5xx=2)
    res = await client.wait(job_id, timeout_s=5, **FAST)
    assert res.text == "Stand-in answer to: retry me"
    assert runpod_standin.state.stats.flaky_served == 2


async def test_429_on_submit_is_retried_by_run_and_wait(
    client: RunPodClient, runpod_standin: StandinServer
) -> None:
    runpod_standin.set_mode(flaky_5xx=2, flaky_status=429)
    res = await client.run_and_wait(build_input("busy", 8), timeout_s=5, **FAST)
    assert res.text == "Stand-in answer to: busy"
    assert runpod_standin.state.stats.submitted == 1


async def test_503_on_submit_is_not_blindly_resubmitted(
    client: RunPodClient, runpod_standin: StandinServer
) -> None:
    runpod_standin.set_mode(flaky_5xx=1)
    with pytest.raises(RunPodTransientError) as info:
        await client.run_and_wait(build_input("x", 4), timeout_s=5, **FAST)
    assert info.value.status_code == 503 and info.value.job_may_exist is True
    assert runpod_standin.state.stats.submitted == 0


async def test_persistent_503_ends_in_timeout_not_forever(
    client: RunPodClient, runpod_standin: StandinServer
) -> None:
    job_id = await client.submit(build_input("x", 4))
    runpod_standin.set_mode(flaky_5xx=10_000)
    started = time.monotonic()
    with pytest.raises(RunPodTimeout) as info:
        await client.wait(job_id, timeout_s=0.4, **FAST)
    assert time.monotonic() - started < 1.5
    assert info.value.cancelled is False and "503" in info.value.reason


async def test_wrong_key_is_auth_error(runpod_standin: StandinServer) -> None:
    async with RunPodClient(runpod_standin.base_url, "wrong-key", runpod_standin.endpoint_id) as bad:
        with pytest.raises(RunPodAuthError) as info:
            await bad.submit(build_input("x", 4))
        assert info.value.status_code == 401
        with pytest.raises(RunPodAuthError):
            await bad.health()
        with pytest.raises(RunPodAuthError):
            await bad.run_and_wait(build_input("x", 4), timeout_s=2, **FAST)
    assert runpod_standin.state.stats.submitted == 0


async def test_missing_key_is_401(runpod_standin: StandinServer) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{runpod_standin.base_url}/v2/e/run", json={"input": {"prompt": "x"}})
    assert r.status_code == 401


async def test_unknown_job_is_not_found(client: RunPodClient) -> None:
    with pytest.raises(RunPodNotFound):
        await client.status("no-such-job")
    with pytest.raises(RunPodNotFound):
        await client.wait("no-such-job", timeout_s=2, **FAST)


async def test_health(client: RunPodClient) -> None:
    await client.run_and_wait(build_input("x", 4), timeout_s=5, **FAST)
    h = await client.health()
    assert h["jobs"] == {"completed": 1, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}
    assert set(h["workers"]) == {"idle", "running"}
    assert "STAND-IN" in h["standin"] and "not RunPod" in h["standin"]


async def test_resume_waiting_from_another_client(runpod_standin: StandinServer) -> None:
    args = (runpod_standin.base_url, runpod_standin.api_key, runpod_standin.endpoint_id)
    async with RunPodClient(*args) as first:
        job_id = await first.submit(build_input("resume", 8))
    async with RunPodClient(*args) as second:
        res = await second.wait(job_id, timeout_s=5, **FAST)
    assert res.runpod_job_id == job_id and res.text == "Stand-in answer to: resume"


async def test_jobs_are_scoped_to_their_endpoint(client: RunPodClient, runpod_standin: StandinServer) -> None:
    job_id = await client.submit(build_input("x", 4))
    async with RunPodClient(runpod_standin.base_url, runpod_standin.api_key, "other-endpoint") as other:
        with pytest.raises(RunPodNotFound):
            await other.status(job_id)


async def test_connection_refused_is_transient_and_no_job(runpod_standin: StandinServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with RunPodClient(f"http://127.0.0.1:{port}", runpod_standin.api_key, "e") as dead:
        with pytest.raises(RunPodTransientError) as info:
            await dead.submit(build_input("x", 4))
        assert info.value.job_may_exist is False
        started = time.monotonic()
        with pytest.raises(RunPodTransientError):
            await dead.run_and_wait(build_input("x", 4), timeout_s=0.3, **FAST)
        assert time.monotonic() - started < 1.5


async def test_shared_http_client_is_not_closed(runpod_standin: StandinServer) -> None:
    async with httpx.AsyncClient() as http:
        async with RunPodClient(
            runpod_standin.base_url, runpod_standin.api_key, runpod_standin.endpoint_id, http=http
        ) as c:
            await c.health()
        assert not http.is_closed


async def test_control_endpoint_flips_modes_over_http(
    client: RunPodClient, runpod_standin: StandinServer
) -> None:
    url = f"{runpod_standin.base_url}/_standin/mode"
    auth = {"Authorization": f"Bearer {runpod_standin.api_key}"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, json={"fail": True})).status_code == 401
        r = await http.post(url, json={"fail": True, "shape": "text"}, headers=auth)
        assert r.status_code == 200 and r.json()["mode"]["fail"] is True
        assert (await http.post(url, json={"bogus": 1}, headers=auth)).status_code == 400
        assert (await http.post(url, json={"shape": "xml"}, headers=auth)).status_code == 400
    with pytest.raises(RunPodJobFailed):
        await client.run_and_wait(build_input("x", 4), timeout_s=5, **FAST)


async def test_bad_wait_arguments_are_rejected_before_submitting(
    client: RunPodClient, runpod_standin: StandinServer
) -> None:
    with pytest.raises(ValueError):
        await client.run_and_wait(build_input("x", 4), timeout_s=5, poll_initial_s=1, poll_max_s=0.5)
    with pytest.raises(ValueError):
        await client.run_and_wait(build_input("x", 4), timeout_s=0)
    assert runpod_standin.state.stats.submitted == 0
