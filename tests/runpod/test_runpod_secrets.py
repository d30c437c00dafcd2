"""The API key never shows up in exceptions, reprs or logs (DEBUG level, httpx/httpcore included)."""

from __future__ import annotations

import logging
import traceback

import httpx
import pytest

from app.runpod import RunPodClient, RunPodError, RunPodProtocolError, build_input
from app.runpod.standin import StandinServer

FAST = {"poll_initial_s": 0.02, "poll_max_s": 0.1}


def _all_text(exc: BaseException) -> str:
    return "\n".join(
        [str(exc), repr(exc), getattr(exc, "reason", ""), *map(str, exc.args)]
        + traceback.format_exception(exc)
    )


async def test_key_absent_from_errors_and_logs(
    runpod_standin: StandinServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # the app's log setup quiets httpx to WARNING
    key = runpod_standin.api_key
    errors: list[RunPodError] = []
    async with RunPodClient(
        runpod_standin.base_url, key, runpod_standin.endpoint_id, request_timeout_s=5
    ) as client:
        assert key not in repr(client) and key not in str(vars(client))
        await client.run_and_wait(build_input("ok", 4), timeout_s=5, **FAST)
        for mode in ({"slow": True}, {"fail": True}, {"malformed": True}, {"flaky_5xx": 1}):
            runpod_standin.reset()
            runpod_standin.set_mode(**mode)
            with pytest.raises(RunPodError) as info:
                await client.run_and_wait(build_input("x", 4), timeout_s=0.3, **FAST)
            errors.append(info.value)
        with pytest.raises(RunPodError) as info:
            await client.status("missing")
        errors.append(info.value)
    async with RunPodClient(runpod_standin.base_url, key + "x", "e") as wrong:
        with pytest.raises(RunPodError) as info:
            await wrong.health()
        errors.append(info.value)
    assert {type(e).__name__ for e in errors} == {
        "RunPodTimeout", "RunPodJobFailed", "RunPodMalformedOutput", "RunPodTransientError",
        "RunPodNotFound", "RunPodAuthError",
    }
    for exc in errors:
        assert key not in _all_text(exc)
    assert "HTTP Request" in caplog.text and "runpod" in caplog.text  # httpx and our logs were captured
    assert key not in caplog.text


async def test_key_echoed_by_server_is_scrubbed() -> None:
    key = "sk-echo-secret-123"

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {key}"
        if request.url.path.endswith("/run"):
            return httpx.Response(400, text=f"bad request from key {key}")
        return httpx.Response(200, json={"id": "j1", "status": "FAILED", "error": f"env RUNPOD_KEY={key}"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = RunPodClient("http://runpod.invalid", key, "ep", http=http)
        with pytest.raises(RunPodProtocolError) as info:
            await client.submit({"prompt": "x"})
        assert key not in _all_text(info.value) and "<redacted>" in info.value.reason
        with pytest.raises(RunPodError) as info2:
            await client.wait("j1", timeout_s=1, **FAST)
        assert key not in _all_text(info2.value)
        st = await client.status("j1")
        assert st.error is not None and key not in st.error
