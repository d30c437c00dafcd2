"""The streamed load: clients on the OpenAI-compatible API with `stream: true`, miners that
stream their answers word by word on the lease (POST /job/{id}/chunk).

A streaming miner declares MODEL on its polls, leases one job at a time (GET /job/next), then
"generates" `words` words, one every `word_s` seconds; a sender task posts whatever text is
pending whenever the previous chunk post has returned (as mia-miner coalesces), so a slow server
gets fewer, larger chunks rather than a backlog. Then it posts the whole answer, signed.
A streaming client sends POST /v1/chat/completions and reads the events: time to first token
is from sending the request to the first content delta; end-to-end is to `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from bench.wire import (MINER_MAX_WAIT_S, Role, Stats, Window, backoff, long_poll,
                        post_result)
from bench.signer import Wallet

MODEL = "bench-model"
WORD = "pong"


async def declare(http: aiohttp.ClientSession, auth: dict[str, str]) -> None:
    """One poll that takes nothing (wait=0 on an empty queue), so GET /v1/models lists MODEL
    before any client asks for it."""
    async with http.get("/job/next", params={"wait": "0", "model": MODEL}, headers=auth) as r:
        if r.status not in (200, 204):
            raise RuntimeError(f"declaring the model: {r.status} {await r.text()}")
        if r.status == 200:
            raise RuntimeError("a job was queued before the run started")


async def miner(http: aiohttp.ClientSession, signed_in: tuple[Wallet, dict[str, str]],
                role: Role, window: Window, stats: Stats) -> None:
    wallet, auth = signed_in
    params = {"wait": str(min(role.wait_s, MINER_MAX_WAIT_S)), "model": MODEL}
    while True:
        job = await long_poll(http, "/job/next", params, auth, stats, "next")
        if job is None:
            continue
        output = await _generate(http, auth, job, role, stats)
        body = {"job_id": job["job_id"], "lease_id": job["lease_id"], "output": output,
                "output_tokens": role.words, "signature": wallet.sign_result(job["job_id"], output)}
        await post_result(http, auth, body, window, stats)


async def _generate(http: aiohttp.ClientSession, auth: dict[str, str], job: dict[str, Any],
                    role: Role, stats: Stats) -> str:
    words = [WORD + ("" if i == role.words - 1 else " ") for i in range(role.words)]
    if not job.get("stream"):
        await asyncio.sleep(role.word_s * role.words)
        return "".join(words)
    pending: list[str] = []
    more = asyncio.Event()
    finished = False

    async def sender() -> None:
        seq = 0
        while pending or not finished:
            if not pending:
                more.clear()
                await more.wait()
                continue
            text = "".join(pending)
            pending.clear()
            if await _post_chunk(http, auth, job, seq, text, stats):
                seq += 1

    task = asyncio.create_task(sender())
    for word in words:
        if role.word_s:
            await asyncio.sleep(role.word_s)
        pending.append(word)
        more.set()
    finished = True
    more.set()
    await task
    return "".join(words)


async def _post_chunk(http: aiohttp.ClientSession, auth: dict[str, str], job: dict[str, Any],
                      seq: int, text: str, stats: Stats) -> bool:
    body = {"lease_id": job["lease_id"], "seq": seq, "delta": text}
    try:
        async with http.post(f"/job/{job['job_id']}/chunk", json=body, headers=auth) as r:
            if r.status == 200:
                return True
            stats.errors[f"chunk {r.status}"] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.errors[f"chunk {type(exc).__name__}"] += 1
    return False  # the text is lost to the stream; the signed answer still carries it


async def client(http: aiohttp.ClientSession, key: str, role: Role, window: Window,
                 stats: Stats, delay_s: float) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "stream": True, "max_tokens": role.words,
            "messages": [{"role": "user", "content": "ping"}]}
    await asyncio.sleep(delay_s)
    while time.time() < window.end:
        started = time.perf_counter()
        first: float | None = None
        outcome = "broken"
        try:
            async with http.post("/v1/chat/completions", json=body, headers=auth) as r:
                if r.status != 200:
                    stats.errors[f"v1 {r.status}"] += 1
                    await backoff(r)
                    continue
                async for raw in r.content:
                    line = raw.strip()
                    if not line.startswith(b"data: "):
                        continue
                    if line == b"data: [DONE]":
                        outcome = "done"
                        break
                    event = orjson.loads(line[6:])
                    if "error" in event:
                        stats.errors[f"stream {event['error']['code']}"] += 1
                        outcome = "error"
                        break
                    if not stats.job_ids or stats.job_ids[-1] != event["job_id"]:
                        stats.job_ids.append(event["job_id"])
                    if first is None and any(c["delta"].get("content")
                                             for c in event["choices"]):
                        first = time.perf_counter()
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors[f"v1 {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
            continue
        if window.holds(time.time()):
            if outcome == "done":
                stats.done += 1
                stats.latencies_ms.append((time.perf_counter() - started) * 1000)
                if first is not None:
                    stats.ttft_ms.append((first - started) * 1000)
            else:
                stats.failed += 1
