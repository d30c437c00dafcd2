"""The load generator: simulated miners and chat clients, in child processes of their own.

Miners sign in with real wallets (EIP-4361), long-poll for jobs and post signed results: with the
batch protocol up to `batch_max` jobs per GET /job/batch and their results in one
POST /job/results; with the single-job protocol GET /job/next and POST /job/result per job.
Clients are closed loops: POST /chat?wait=..., and GET /chat/{id}?wait=... until the answer is
there; with a target rate they pace themselves instead (the rate is split evenly between them).
Each process reports plain counts and latencies to the parent through a pipe.
"""

from __future__ import annotations

import asyncio
import random
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from bench import stream
from bench.signer import Wallet
from bench.wire import (MINER_MAX_WAIT_S, Role, Stats, Window, backoff, long_poll,
                        post_result)

OUTPUT = "pong"
PROTOCOLS = ("batch", "batch-split", "single")
GIVE_UP_S = 120  # a client stops waiting for an answer this long after the window


def child_main(role: Role, conn: Connection) -> None:
    """Entry point of a load process: sign in, say ready, run when told, report, exit."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # the plain loop works too, a little slower
        pass
    asyncio.run(_child(role, conn))


async def _child(role: Role, conn: Connection) -> None:
    if role.kind == "hoarders":
        await _hoarders(role, conn)
        return
    stats = Stats()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=role.wait_s + 90)
    async with aiohttp.ClientSession(role.base_url, connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()
        if role.kind == "miners":
            miners = await asyncio.gather(*(_sign_in(http, Wallet()) for _ in range(role.count)))
            if role.stream:
                await asyncio.gather(*(stream.declare(http, auth) for _, auth in miners))
        conn.send("ready")
        start, end = await loop.run_in_executor(None, conn.recv)
        window = Window(start, end)
        if role.kind == "miners":
            loop_of = (stream.miner if role.stream
                       else _batch_miner if role.protocol.startswith("batch") else _miner)
            tasks = [asyncio.create_task(loop_of(http, m, role, window, stats)) for m in miners]
            await loop.run_in_executor(None, conn.recv)  # "stop": every client has finished
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        elif role.stream:
            await asyncio.gather(*(stream.client(http, role.keys[i % len(role.keys)], role,
                                                 window, stats, i * role.ramp_s / role.count)
                                   for i in range(role.count)))
        else:
            rng = random.Random(role.seed)
            await asyncio.gather(*(_client(http, role.keys[i % len(role.keys)], role, window,
                                           stats, rng, i * role.ramp_s / role.count)
                                   for i in range(role.count)))
    conn.send(stats.as_dict())


async def _hoarders(role: Role, conn: Connection) -> None:
    """Hoarding wallets (bench/hoard.py): says their addresses when signed in, reports each
    wallet's leases and refusals when told to stop."""
    from bench.hoard import HoardStats, hoard  # bench.hoard imports the app's models

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=role.wait_s + 90)
    async with aiohttp.ClientSession(role.base_url, connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()
        wallets = await asyncio.gather(*(_sign_in(http, Wallet()) for _ in range(role.count)))
        conn.send([w.address for w, _ in wallets])
        _, end = await loop.run_in_executor(None, conn.recv)
        stats = [HoardStats() for _ in wallets]
        tasks = [asyncio.create_task(hoard(http, auth, role.lanes, end, s))
                 for (_, auth), s in zip(wallets, stats, strict=True)]
        await loop.run_in_executor(None, conn.recv)  # "stop"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    conn.send([s.as_dict(w.address) for (w, _), s in zip(wallets, stats, strict=True)])


async def _sign_in(http: aiohttp.ClientSession, wallet: Wallet) -> tuple[Wallet, dict[str, str]]:
    for attempt in range(20):
        try:
            async with http.get("/auth/nonce", params={"address": wallet.address}) as r:
                if r.status != 200:
                    raise RuntimeError(f"/auth/nonce: {r.status} {await r.text()}")
                message = (await r.json())["message"]
            async with http.post("/register_miner", json={
                    "message": message, "signature": wallet.personal_sign(message.encode())}) as r:
                if r.status == 200:
                    token = (await r.json())["token"]
                    return wallet, {"Authorization": f"Bearer {token}"}
                if r.status == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                raise RuntimeError(f"register_miner: {r.status} {await r.text()}")
        except aiohttp.ClientError:
            await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError("a miner could not sign in")


async def _miner(http: aiohttp.ClientSession, miner: tuple[Wallet, dict[str, str]], role: Role,
                 window: Window, stats: Stats) -> None:
    wallet, auth = miner
    params = {"wait": str(min(role.wait_s, MINER_MAX_WAIT_S))}
    while True:
        job = await long_poll(http, "/job/next", params, auth, stats, "next")
        if job is None:
            continue
        if role.think_s:
            await asyncio.sleep(role.think_s)
        body = {"job_id": job["job_id"], "lease_id": job["lease_id"], "output": OUTPUT,
                "output_tokens": 1, "signature": wallet.sign_result(job["job_id"], OUTPUT)}
        await post_result(http, auth, body, window, stats)


async def _batch_miner(http: aiohttp.ClientSession, miner: tuple[Wallet, dict[str, str]],
                       role: Role, window: Window, stats: Stats) -> None:
    """GET /job/batch, then POST /job/results?next=...&wait=...: the results and the next lease
    in one request, while the lease part brings jobs (protocol "batch"); with "batch-split",
    results alone and a GET /job/batch after each."""
    wallet, auth = miner
    params = {"max": str(role.batch_max), "wait": str(min(role.wait_s, MINER_MAX_WAIT_S))}
    then = ({"next": params["max"], "wait": params["wait"]} if role.protocol == "batch"
            else None)
    jobs: list[dict[str, Any]] = []
    while True:
        if not jobs:
            answer = await long_poll(http, "/job/batch", params, auth, stats, "batch")
            if answer is None:
                continue
            jobs = answer["jobs"]
        if role.think_s:  # the model answers a batch in one pass, as a GPU server would
            await asyncio.sleep(role.think_s)
        # Every result is signed on its own, in a batch too.
        items = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "output": OUTPUT,
                  "output_tokens": 1, "signature": wallet.sign_result(j["job_id"], OUTPUT)}
                 for j in jobs]
        jobs = await _post_results(http, auth, items, window, stats, then)


async def _post_results(http: aiohttp.ClientSession, auth: dict[str, str],
                        items: list[dict[str, Any]], window: Window, stats: Stats,
                        then: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One POST /job/results (with `then`, ?next=&wait=: it also leases), retried as a whole
    while the server cannot take it (a repeat of an accepted item is "completed" again); a
    rejected item is counted and never retried. The jobs the lease part brought, if any."""
    for _ in range(50):
        try:
            async with http.post("/job/results", json={"results": items}, headers=auth,
                                 params=then) as r:
                if r.status == 200:
                    body = await r.json()
                    answers = body["results"]
                    break
                stats.errors[f"results {r.status}"] += 1
                if r.status < 500 and r.status != 429:  # the request itself is wrong
                    return []
                await backoff(r)
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors[f"results {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
    else:
        return []
    refused = body.get("lease_error")
    if refused:  # the results are in; the lease part was refused, as a GET would have been
        stats.errors[f"batch {refused['status']}"] += 1
        await asyncio.sleep(min(5.0, refused.get("retry_after_s") or 0.2))
    in_window = window.holds(time.time())
    for answer in answers:
        if answer["status"] != "completed":
            stats.errors[f"result {answer.get('error', 'rejected')}"] += 1
        elif in_window:
            stats.done += 1
    return list(body.get("jobs") or ())


async def _client(http: aiohttp.ClientSession, key: str, role: Role, window: Window,
                  stats: Stats, rng: random.Random, delay_s: float) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    wait = {"wait": str(role.wait_s)}
    interval = role.count / role.rate if role.rate else 0.0
    await asyncio.sleep(delay_s)
    if interval:  # spread the clients' first requests over one interval
        await asyncio.sleep(rng.random() * interval)
    next_start = time.time()
    while time.time() < window.end:
        if interval:
            next_start += interval
        started = time.perf_counter()
        job = await _submit(http, auth, wait, stats)
        if job is not None:
            job = await _await_answer(http, auth, wait, job, window, stats)
        finished = time.time()
        if job is not None and window.holds(finished):
            if job["status"] == "completed":
                stats.done += 1
                stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                stats.failed += 1
        if interval:
            await asyncio.sleep(max(0.0, next_start - time.time()))


async def _submit(http: aiohttp.ClientSession, auth: dict[str, str], wait: dict[str, str],
                  stats: Stats) -> dict[str, Any] | None:
    try:
        async with http.post("/chat", params=wait, json={"message": "ping"}, headers=auth) as r:
            if r.status in (200, 202):
                job: dict[str, Any] = await r.json()
                stats.job_ids.append(job["job_id"])
                return job
            stats.errors[f"chat {r.status}"] += 1
            await backoff(r)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The job may exist or not: the chaos check finds it in the database either way.
        stats.errors[f"chat {type(exc).__name__}"] += 1
        await asyncio.sleep(0.2)
    return None


async def _await_answer(http: aiohttp.ClientSession, auth: dict[str, str], wait: dict[str, str],
                        job: dict[str, Any], window: Window, stats: Stats) -> dict[str, Any] | None:
    while time.time() < window.end + GIVE_UP_S:
        if job["status"] in ("completed", "failed"):
            return job
        try:
            async with http.get(f"/chat/{job['job_id']}", params=wait, headers=auth) as r:
                if r.status == 200:
                    job = await r.json()
                    continue
                stats.errors[f"read {r.status}"] += 1
                await backoff(r)
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors[f"read {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
    return None


