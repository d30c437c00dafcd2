"""Latency and server cost of one full chat cycle over real HTTP, one at a time.

key -> POST /chat -> miner GET /job/next -> signed POST /job/result -> client GET /chat?wait;
with --batch N: N x POST /chat -> one GET /job/batch?max=N -> one POST /job/results -> N x GET
/chat. Starts `mia serve` (uvicorn, one process) on 127.0.0.1 with its own Redis prefix and a
fresh database; SQLite by default, PostgreSQL with --database-url. Reports the wall time per
cycle and the API process's CPU (utime+stime from /proc) per chat job, which is what the
throughput is bound by on a small machine. Run it under `py-spy record --pid` for a profile.

    .venv/bin/python -m bench.cycle [--cycles 200] [--batch 16] [--database-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

from app.auth.wallet import result_digest
from app.localredis import free_port
from bench.system import private_postgres


async def one_cycle(client: httpx.AsyncClient, key: str, auth: dict[str, str],
                    account) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    chat = (await client.post("/chat", json={"message": "ping"},
                              headers={"Authorization": f"Bearer {key}"})).json()
    job = (await client.get("/job/next", params={"wait": 5}, headers=auth)).json()
    sig = account.sign_message(encode_defunct(primitive=result_digest(job["job_id"], "pong")))
    await client.post("/job/result", headers=auth, json={
        "job_id": job["job_id"], "lease_id": job["lease_id"], "output": "pong", "output_tokens": 1,
        "signature": "0x" + sig.signature.hex().removeprefix("0x")})
    answer = (await client.get(f"/chat/{chat['job_id']}", params={"wait": 5},
                               headers={"Authorization": f"Bearer {key}"})).json()
    if answer["response"] != "pong":
        raise RuntimeError(f"unexpected answer {answer}")
    return time.perf_counter() - start


async def batch_cycle(client: httpx.AsyncClient, key: str, auth: dict[str, str], account,  # type: ignore[no-untyped-def]
                      n: int) -> float:
    start = time.perf_counter()
    client_auth = {"Authorization": f"Bearer {key}"}
    chats = await asyncio.gather(*(client.post("/chat", json={"message": "ping"},
                                               headers=client_auth) for _ in range(n)))
    jobs: list[dict] = []
    while len(jobs) < n:
        r = await client.get("/job/batch", params={"wait": 5, "max": n - len(jobs)}, headers=auth)
        jobs += r.json()["jobs"]
    items = []
    for job in jobs:
        sig = account.sign_message(encode_defunct(primitive=result_digest(job["job_id"], "pong")))
        items.append({"job_id": job["job_id"], "lease_id": job["lease_id"], "output": "pong",
                      "output_tokens": 1, "signature": "0x" + sig.signature.hex().removeprefix("0x")})
    out = (await client.post("/job/results", headers=auth, json={"results": items})).json()
    if any(o["status"] != "completed" for o in out["results"]):
        raise RuntimeError(f"unexpected results {out}")
    answers = await asyncio.gather(*(client.get(f"/chat/{c.json()['job_id']}", params={"wait": 5},
                                                headers=client_auth) for c in chats))
    if any(a.json()["response"] != "pong" for a in answers):
        raise RuntimeError("unexpected answers")
    return time.perf_counter() - start


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(base_url: str, key: str, cycles: int, account, pid: int = 0,  # type: ignore[no-untyped-def]
              batch: int = 0) -> tuple[list[float], float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        message = (await client.get("/auth/nonce", params={"address": account.address})).json()["message"]
        sig = account.sign_message(encode_defunct(text=message)).signature.hex()
        token = (await client.post("/register_miner", json={
            "message": message, "signature": "0x" + sig.removeprefix("0x")})).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        async def cycle() -> float:
            if batch:
                return await batch_cycle(client, key, auth, account, batch)
            return await one_cycle(client, key, auth, account)

        for _ in range(10):  # warm-up
            await cycle()
        before = cpu_s(pid) if pid else 0.0
        times = [await cycle() for _ in range(cycles)]
        return times, (cpu_s(pid) - before if pid else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--batch", type=int, default=0, help="jobs per batch cycle (0: single)")
    parser.add_argument("--database-url", help="PostgreSQL server URL; a fresh database is made beside it")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="mia-bench-")
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if args.database_url:
        db, cleanup = private_postgres(args.database_url)
    else:
        db = f"sqlite+aiosqlite:///{tmp}/bench.db"
    port = free_port()
    account = Account.create()
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": args.redis_url, "PORT": str(port),
           "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "WARNING",
           "PUBLIC_URL": f"http://127.0.0.1:{port}",
           "MINER_MAX_LEASES": "64",  # one wallet leases a whole --batch (up to 64) at once
           # the one miner is trusted: a wallet on probation would be handed shadow copies of
           # the jobs (app/trust), never the client's own job, and the cycle would not close
           "TRUSTED_MINERS": account.address}
    py = sys.executable
    subprocess.run([py, "-m", "app.cli", "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run([py, "-m", "app.cli", "apikey", "create", "--business", "bench"], env=env,
                         check=True, capture_output=True, text=True).stdout
    key = out.split()[-1]
    server = subprocess.Popen([py, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        times, cpu = asyncio.run(run(base, key, args.cycles, account, server.pid, args.batch))
    finally:
        server.terminate()
        server.wait()
        cleanup()
    ms = sorted(t * 1000 for t in times)
    jobs = len(ms) * max(args.batch, 1)
    result = {"database": db.split(":")[0], "cycles": len(ms), "cores": os.cpu_count(),
              "batch": args.batch, "api_cpu_ms_per_job": round(cpu * 1000 / jobs, 3),
              "median_ms": round(statistics.median(ms), 2),
              "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2), "max_ms": round(ms[-1], 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
