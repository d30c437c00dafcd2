"""One bench run: start the system, start the load processes, measure a window, audit, report."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx

from app.accounts.keys import issue_api_key
from bench import ledger
from bench.hoard import EXTRA_LANES, HeldSampler, limits, most_at_once
from bench.load import Role, child_main
from bench.system import CpuMeter, Spec, System, postgres_pids

SPAWN = mp.get_context("spawn")


@dataclass
class Plan:
    scenario: str = "steady"  # steady | hold | chaos
    miners: int = 64
    clients: int = 64
    rate: float = 0.0  # jobs/s over all clients; 0 = closed loop, as fast as answers come
    duration_s: float = 20.0
    warmup_s: float = 5.0
    think_s: float = 0.0  # simulated model time per job
    protocol: str = "batch"  # how miners lease and answer: "batch", "batch-split" or "single"
    # (bench/load.py)
    batch_max: int = 16  # batch protocol: jobs a miner asks for per lease request
    miner_procs: int = 1
    client_procs: int = 1
    keys: int = 32  # business API keys the clients share (each has its own rate limit)
    wait_s: int = 30
    ramp_s: float = 0.0  # clients start spread over this, as real traffic arrives
    settle_s: float = 90.0
    stream: bool = False  # clients stream over /v1, miners stream word by word (bench/stream.py)
    words: int = 20  # streaming: words per answer
    word_s: float = 0.0  # streaming: the simulated model's seconds per word
    hoarders: int = 0  # hoarding wallets (bench/hoard.py), beside the honest miners
    spec: Spec = field(default_factory=Spec)


@dataclass
class LoadProc:
    role: Role
    proc: Any
    conn: Connection
    alive: bool = True


def start_load(role: Role) -> LoadProc:
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=child_main, args=(role, child), daemon=True)
    proc.start()
    return LoadProc(role, proc, parent)


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total)) if total else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class HealthProbe(threading.Thread):
    """GET /health every 50 ms from its own connection; what an orchestrator's probe sees."""

    def __init__(self, base_url: str):
        super().__init__(daemon=True, name="health-probe")
        self.base_url = base_url
        self.ms: list[float] = []
        self.failures = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            while not self.stopped.wait(0.05):
                started = time.perf_counter()
                try:
                    ok = http.get("/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.ms.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)], 2)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50, p95 and p99 of `values`, and how many there were."""
    return {"p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99),
            "n": len(values)}


def _measure(meter: CpuMeter, start: float, end: float) -> None:
    time.sleep(max(0.0, start - time.time()))
    meter.start()
    time.sleep(max(0.0, end - time.time()))
    meter.stop()


def execute(plan: Plan, chaos: Any = None) -> dict[str, Any]:
    """Runs the plan; `chaos(system, miner_procs, window_end)` runs in a thread if given."""
    system = System(plan.spec).start()
    miners: list[LoadProc] = []
    clients: list[LoadProc] = []
    hoarders: list[LoadProc] = []
    sampler: HeldSampler | None = None
    hoard_stats: list[dict[str, Any]] = []
    hoard: dict[str, Any] | None = None
    try:
        db_url = system.env["DATABASE_URL"]
        keys = [asyncio.run(issue_api_key(db_url, f"bench-{i}", "chat"))
                for i in range(max(1, min(plan.keys, plan.clients)))]
        streaming = dict(stream=plan.stream, words=plan.words, word_s=plan.word_s)
        miner_roles = [Role("miners", n, system.base_url, think_s=plan.think_s, wait_s=plan.wait_s,
                            protocol=plan.protocol, batch_max=plan.batch_max, **streaming)
                       for n in split(plan.miners, plan.miner_procs)]
        client_counts = split(plan.clients, plan.client_procs)
        client_roles = [Role("clients", n, system.base_url, keys=keys, wait_s=plan.wait_s,
                             ramp_s=plan.ramp_s,
                             rate=plan.rate * n / plan.clients if plan.rate else 0.0, seed=i,
                             **streaming)
                        for i, n in enumerate(client_counts)]
        miners = [start_load(r) for r in miner_roles]
        for m in miners:
            m.conn.recv()  # signed in
        if plan.hoarders:  # not among the chaos monkey's victims: their reports must arrive
            lanes = limits(system.env)["MINER_MAX_POLLS"] + EXTRA_LANES
            hoarders = [start_load(Role("hoarders", plan.hoarders, system.base_url,
                                        lanes=lanes))]
            sampler = HeldSampler(db_url, hoarders[0].conn.recv())
            sampler.start()
        clients = [start_load(r) for r in client_roles]
        for c in clients:
            c.conn.recv()
        start = time.time() + plan.warmup_s
        end = start + plan.duration_s
        for p in (*miners, *clients, *hoarders):
            p.conn.send((start, end))
        probe = HealthProbe(system.base_url)
        probe.start()
        meter = CpuMeter({"api": system.server_pids, "postgres": postgres_pids,
                          "redis": system.redis_pids,
                          "load": lambda: [p.proc.pid for p in (*miners, *clients)]})
        timer = threading.Thread(target=_measure, args=(meter, start, end), daemon=True)
        timer.start()
        monkey = None
        if chaos is not None:
            monkey = threading.Thread(target=chaos, args=(system, miners, end), daemon=True)
            monkey.start()
        client_stats = [c.conn.recv() for c in clients]
        timer.join()
        if monkey is not None:
            monkey.join()
        unsettled = asyncio.run(ledger.settle(db_url, plan.settle_s))
        probe.stopped.set()
        for h in hoarders:
            h.conn.send("stop")
            hoard_stats.extend(h.conn.recv())
        if sampler is not None:
            sampler.stopped.set()
            sampler.join()
        miner_stats = []
        for m in miners:
            if m.alive and m.proc.is_alive():
                m.conn.send("stop")
                miner_stats.append(m.conn.recv())
        for p in (*miners, *clients, *hoarders):
            p.proc.join(10)
        dispatch, check_dispatch = asyncio.run(ledger.dispatch_ms(db_url, start, end))
        job_ids = {j for s in client_stats for j in s["job_ids"]}
        audit = asyncio.run(ledger.audit(db_url, job_ids))
        audit["unsettled_after_s"] = plan.settle_s if unsettled else None
        if sampler is not None:
            grants: Counter[str] = Counter()
            for s in hoard_stats:
                grants.update(s["grants"])
            hoard = _hoarding(plan, limits(system.env), sampler, hoard_stats,
                              asyncio.run(ledger.hoarded(db_url, grants, sampler.addresses)))
        rss = system.peak_rss_mib()
        restarts = dict(system.restarts)
        worker_running = system.worker_running()
    finally:
        for p in (*miners, *clients, *hoarders):  # a run that failed half-way leaves no load
            if p.proc.is_alive():
                p.proc.kill()
        system.stop()
    latencies = [x for s in client_stats for x in s["latencies_ms"]]
    ttft = [x for s in client_stats for x in s["ttft_ms"]]
    completed = sum(s["done"] for s in client_stats)
    errors: dict[str, int] = {}
    for s in (*client_stats, *miner_stats):
        for k, v in s["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "scenario": plan.scenario,
        "database": plan.spec.database, "server": "uvicorn",
        "api_processes": plan.spec.api_procs, "cores": mp.cpu_count(),
        "protocol": plan.protocol,
        "batch_max": plan.batch_max if plan.protocol.startswith("batch") else None,
        "miners": plan.miners, "clients": plan.clients, "target_rate": plan.rate or None,
        "think_s": plan.think_s, "duration_s": plan.duration_s,
        "stream": {"words": plan.words, "word_s": plan.word_s} if plan.stream else None,
        "ttft_ms": percentiles(ttft) if plan.stream else None,
        "completed": completed, "jobs_per_s": round(completed / plan.duration_s, 1),
        "failed": sum(s["failed"] for s in client_stats),
        "e2e_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99),
                   "mean": round(statistics.fmean(latencies), 2) if latencies else None},
        "dispatch_ms": percentiles(dispatch),
        # trust's check copies, apart: they wait behind the business's lists by design
        "check_dispatch_ms": percentiles(check_dispatch),
        "health_ms": {"p50": pct(probe.ms, 50), "p99": pct(probe.ms, 99), "max": pct(probe.ms, 100),
                      "n": len(probe.ms), "failures": probe.failures},
        "cpu_s": meter.seconds,
        "cpu_ms_per_job": {k: round(v * 1000 / completed, 2) if completed else None
                           for k, v in meter.seconds.items()},
        "errors": errors, "peak_rss": rss, "restarts": restarts, "audit": audit,
        "hoarding": hoard, "worker_running": worker_running,
    }


def _hoarding(plan: Plan, server: dict[str, int], sampler: HeldSampler,
              stats: list[dict[str, Any]], jobs: dict[str, Any]) -> dict[str, Any]:
    """What the hoarders got: the most leases any held at once (in the database, sampled, and
    from their own grants), every refusal by code, and what became of the jobs they held."""
    refusals: dict[str, int] = {}
    errors: dict[str, int] = {}
    for s in stats:
        for into, counts in ((refusals, s["refusals"]), (errors, s["errors"])):
            for k, v in counts.items():
                into[k] = into.get(k, 0) + v
    return {
        "hoarders": plan.hoarders,
        "lanes_each": server["MINER_MAX_POLLS"] + EXTRA_LANES,
        "limits": server,
        "max_held": max(sampler.most.values(), default=0),
        "max_held_own_view": max((most_at_once(s["leases"]) for s in stats), default=0),
        "max_held_by_wallet": sampler.most,
        "samples": sampler.samples, "sample_failures": sampler.failures,
        "leases": sum(len(s["leases"]) for s in stats),
        "extensions": sum(s["extensions"] for s in stats),
        "refusals": refusals, "errors": errors, "jobs": jobs,
    }
