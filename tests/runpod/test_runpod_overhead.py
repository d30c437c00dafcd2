"""Round-trip overhead of run_and_wait against the stand-in with zero processing time."""

from __future__ import annotations

import statistics
import time

import pytest

from app.runpod import RunPodClient, build_input
from app.runpod.standin import StandinServer

RUNS = 50


async def test_run_and_wait_overhead(runpod_standin: StandinServer, capsys: pytest.CaptureFixture[str]) -> None:
    runpod_standin.set_mode(queue_s=0.0, processing_s=0.0)
    samples: list[float] = []
    async with RunPodClient(runpod_standin.base_url, runpod_standin.api_key, runpod_standin.endpoint_id) as client:
        await client.run_and_wait(build_input("warm up", 8), timeout_s=5)
        for i in range(RUNS):
            started = time.perf_counter()
            res = await client.run_and_wait(build_input(f"prompt {i}", 8), timeout_s=5)
            samples.append(time.perf_counter() - started)
            assert res.text == f"Stand-in answer to: prompt {i}"
    median_ms = statistics.median(samples) * 1000
    p95_ms = sorted(samples)[int(RUNS * 0.95) - 1] * 1000
    with capsys.disabled():
        print(f"\nrun_and_wait overhead over {RUNS} runs: median {median_ms:.2f} ms, p95 {p95_ms:.2f} ms, "
              f"max {max(samples) * 1000:.2f} ms")
    # Two HTTP round trips on loopback; no poll sleep because the first poll is immediate.
    assert median_ms < 100
