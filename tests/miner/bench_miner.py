"""Jobs/s for one miner against the demo model, through the real backend.

    .venv/bin/python -m tests.miner.bench_miner [--jobs 300] [--concurrency 1 8] [--delay 0 0.5]
                                                [--batch auto off]

Everything runs on 127.0.0.1 as separate processes: the backend (uvicorn, SQLite in a temp dir,
the machine's Redis or a private redis-server), the demo model server (optionally with an
artificial per-completion delay standing in for generation time), and `python -m miner`.
All jobs are queued first; the rate is measured from the backend's own `completed_at` stamps:
(jobs - 1) / (last completed_at - first completed_at).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

from tests.miner.support import free_port, new_key

ROOT = Path(__file__).resolve().parents[2]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)


async def submit(url: str, key: str, n: int, tag: str) -> list[str]:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        async def one(i: int) -> str:
            async with sem:
                r = await c.post("/chat", json={"message": f"{tag} question {i}"})
                r.raise_for_status()
                return r.json()["job_id"]
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--delay", type=float, nargs="+", default=[0.0],
                    help="demo model seconds per completion (simulated generation time)")
    ap.add_argument("--batch", nargs="+", choices=["auto", "off"], default=["auto"],
                    help="the miner's protocol: batches when the backend has them, or single jobs")
    ns = ap.parse_args()

    from app.localredis import LocalRedis
    from tests.support.services import machine_redis_url

    tmp = Path(tempfile.mkdtemp(prefix="mia-bench-"))
    local_redis = None
    redis_url = machine_redis_url()
    if redis_url is None:
        local_redis = LocalRedis().start()
        redis_url = local_redis.url
    db_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIA_")}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, PORT=str(port),
               PUBLIC_URL=f"http://127.0.0.1:{port}", REDIS_PREFIX=f"bench-{uuid.uuid4().hex[:8]}",
               LOG_LEVEL="WARNING")
    py = sys.executable
    subprocess.run([py, "-m", "app.cli", "migrate"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    out = subprocess.run([py, "-m", "app.cli", "apikey", "create", "--business", "bench"], env=env,
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    api_key = out.strip().rsplit(": ", 1)[1]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(spawn([py, "-m", "app.cli", "serve"], env, tmp / "backend.log"))
        backend = f"http://127.0.0.1:{port}"
        wait_http(backend + "/health")
        print(f"backend {backend}, redis {redis_url}, logs in {tmp}")
        print(f"{'model delay s':>14} {'batch':>5} {'concurrency':>11} {'jobs':>5} {'jobs/s':>8}")
        for delay in ns.delay:
            mport = free_port()
            model = spawn([py, "-m", "miner.demo_model", "--port", str(mport), "--delay", str(delay)],
                          env, tmp / f"model-{delay}.log")
            procs.append(model)
            wait_http(f"http://127.0.0.1:{mport}/health")
            for batch, c in ((b, c) for b in ns.batch for c in ns.concurrency):
                tag = uuid.uuid4().hex[:8]
                ids = asyncio.run(submit(backend, api_key, ns.jobs, tag))
                menv = dict(env, MIA_MINER_PRIVATE_KEY=new_key())
                log = tmp / f"miner-d{delay}-{batch}-c{c}.log"
                miner = spawn([py, "-m", "miner", "--backend", backend, "--model-url",
                               f"http://127.0.0.1:{mport}", "--concurrency", str(c),
                               "--poll-wait", "5", "--batch", batch, "--log-level", "WARNING"],
                              menv, log)
                con = sqlite3.connect(tmp / "bench.db", timeout=30)
                marks = ",".join("?" * len(ids))
                deadline = time.monotonic() + 600
                while True:
                    done = con.execute(f"SELECT COUNT(*) FROM chat_jobs WHERE status='completed' "
                                       f"AND id IN ({marks})", ids).fetchone()[0]
                    if done == len(ids) or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                stamps = sorted(datetime.fromisoformat(str(r[0])) for r in con.execute(
                    f"SELECT completed_at FROM chat_jobs WHERE id IN ({marks}) "
                    f"AND completed_at IS NOT NULL", ids))
                con.close()
                miner.terminate()
                miner.wait(60)
                span = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0
                rate = (len(stamps) - 1) / span if span > 0 else float("nan")
                print(f"{delay:>14} {batch:>5} {c:>11} {done:>5} {rate:>8.1f}", flush=True)
            model.terminate()
            model.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        if local_redis is not None:
            local_redis.stop()


if __name__ == "__main__":
    main()
