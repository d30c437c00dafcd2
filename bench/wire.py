"""What every load process of the bench shares: its role, its counts, the measured window, and
the HTTP steps both the chat and the streaming load use (bench/load.py, bench/stream.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MINER_MAX_WAIT_S = 30  # the longest long-poll GET /job/next and GET /job/batch accept


@dataclass
class Role:
    kind: str  # "miners", "clients" or "hoarders" (bench/hoard.py)
    count: int
    base_url: str
    keys: list[str] = field(default_factory=list)  # clients: API keys, used round-robin
    rate: float = 0.0  # clients: jobs/s for this process, 0 = closed loop
    think_s: float = 0.0  # miners: the simulated model's time per job
    wait_s: int = 30  # long-poll length asked for
    # miners: "batch" (GET /job/batch, then POST /job/results?next= leasing with the results),
    # "batch-split" (POST /job/results alone, GET /job/batch after each) or "single"
    protocol: str = "batch"
    batch_max: int = 16  # miners, batch protocol: jobs asked for per lease request (1..64)
    ramp_s: float = 0.0  # clients: start spread evenly over this many seconds
    seed: int = 0
    stream: bool = False  # streamed answers over /v1 (bench/stream.py)
    words: int = 20  # streaming miners: words per answer
    word_s: float = 0.0  # streaming miners: seconds per word
    lanes: int = 0  # hoarders: lease requests each keeps open at once


@dataclass
class Stats:
    done: int = 0  # chats answered (clients) or results accepted (miners), in the window
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    job_ids: list[str] = field(default_factory=list)  # clients: every job id the server returned
    failed: int = 0  # clients: chats that ended failed (with a reason)
    ttft_ms: list[float] = field(default_factory=list)  # streaming clients: to the first token

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "latencies_ms": self.latencies_ms, "errors": dict(self.errors),
                "job_ids": self.job_ids, "failed": self.failed, "ttft_ms": self.ttft_ms}


class Window:
    """The measured interval, in wall-clock seconds shared by every process."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end

    def holds(self, t: float) -> bool:
        return self.start <= t <= self.end


async def long_poll(http: aiohttp.ClientSession, path: str, params: dict[str, str],
                     auth: dict[str, str], stats: Stats, label: str) -> Any:
    """One lease request: its JSON, or None when no job came (204) or it failed (then after a
    pause, counted under `label`)."""
    try:
        async with http.get(path, params=params, headers=auth) as r:
            if r.status == 204:
                return None
            if r.status != 200:
                stats.errors[f"{label} {r.status}"] += 1
                await backoff(r)
                return None
            return await r.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.errors[f"{label} {type(exc).__name__}"] += 1
        await asyncio.sleep(0.2)
        return None


async def post_result(http: aiohttp.ClientSession, auth: dict[str, str], body: dict[str, Any],
                       window: Window, stats: Stats) -> None:
    """A real miner retries a result it could not deliver; a repeat of an accepted one is a 200."""
    for _ in range(50):
        try:
            async with http.post("/job/result", json=body, headers=auth) as r:
                if r.status == 200:
                    if window.holds(time.time()):
                        stats.done += 1
                    return
                stats.errors[f"result {r.status}"] += 1
                if r.status == 409:  # the lease went to someone else: nothing to retry
                    return
                await backoff(r)
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors[f"result {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)


async def backoff(r: aiohttp.ClientResponse) -> None:
    with contextlib.suppress(ValueError):
        await asyncio.sleep(min(5.0, float(r.headers.get("Retry-After", "0.2"))))
