"""Latency of one full chat cycle over real HTTP, one at a time.

key -> POST /chat -> miner GET /job/next -> signed POST /job/result -> client GET /chat?wait.
Starts `mia serve` (uvicorn, one process) on 127.0.0.1 with its own Redis prefix and a fresh
database; SQLite by default, PostgreSQL with --database-url.

    .venv/bin/python -m bench.cycle [--cycles 200] [--database-url postgresql+asyncpg://...]
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


async def run(base_url: str, key: str, cycles: int) -> list[float]:
    account = Account.create()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        message = (await client.get("/auth/nonce", params={"address": account.address})).json()["message"]
        sig = account.sign_message(encode_defunct(text=message)).signature.hex()
        token = (await client.post("/register_miner", json={
            "message": message, "signature": "0x" + sig.removeprefix("0x")})).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(10):  # warm-up
            await one_cycle(client, key, auth, account)
        return [await one_cycle(client, key, auth, account) for _ in range(cycles)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=200)
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
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": args.redis_url, "PORT": str(port),
           "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "WARNING",
           "PUBLIC_URL": f"http://127.0.0.1:{port}"}
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
        times = asyncio.run(run(base, key, args.cycles))
    finally:
        server.terminate()
        server.wait()
        cleanup()
    ms = sorted(t * 1000 for t in times)
    result = {"database": db.split(":")[0], "cycles": len(ms), "cores": os.cpu_count(),
              "median_ms": round(statistics.median(ms), 2),
              "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2), "max_ms": round(ms[-1], 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
