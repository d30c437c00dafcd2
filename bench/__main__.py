"""`python -m bench` (or `make bench`): the coordinator under load, from a cold start.

    python -m bench                       # the suite: steady, steady-single, half-load, hold, chaos, stream, trust
    python -m bench steady --miners 64 --clients 64 --api-procs 2 --db postgres
    python -m bench steady --protocol single   # miners one job per request (GET /job/next)
    python -m bench hold --miners 2000 --clients 1000 --think 20
    python -m bench chaos --duration 60
    python -m bench stream --clients 32          # /v1 streaming: time to first token
    python -m bench chaos --hoarders 2       # two hoarding wallets, after the same run without
    python -m bench outage                   # Redis and PostgreSQL (the run's own) restarted
    python -m bench trust                    # honest miners and cheaters (bench/trust.py)

Each run prints a table and writes bench/results/<name>.json (with the machine's core count).
The suite exits non-zero if a job was lost, answered twice or failed without a reason, or if a
hoarder was not held to the lease limits (bench/hoard.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.chaos import monkey, outages
from bench.hoard import problems as hoarding_problems
from bench.load import PROTOCOLS
from bench.run import Plan, execute
from bench.system import Spec

RESULTS = Path(__file__).parent / "results"

SUITE = {  # name -> the plan's settings; what `make bench` runs and the committed results show
    "steady": dict(scenario="steady", miners=64, clients=96, duration_s=20),
    # The same with the single-job protocol, which miners without batch support still use.
    "steady-single": dict(scenario="steady", miners=64, clients=96, duration_s=20,
                          protocol="single"),
    "half-load": dict(scenario="steady", miners=64, clients=96, duration_s=20, rate=None),
    # 1,000 clients arrive over 30 s and each waits 40 s for its answer, so in the window all
    # of them hold a request open, 1,000 miners hold leases and 1,000 more long-poll idle.
    # One hoarding wallet (bench/hoard.py) among them, after the same run without it.
    "hold": dict(scenario="hold", miners=2000, clients=1000, think_s=40, duration_s=30,
                 warmup_s=30, ramp_s=30, wait_s=60, miner_procs=2, client_procs=1,
                 hoarders=1),
    "chaos": dict(scenario="chaos", miners=48, clients=48, duration_s=45, miner_procs=4,
                  rate=150.0),
    # The same load while the run's own Redis and PostgreSQL (a private cluster) go down for
    # 3 s each, in turn; the API processes and the worker must ride it out (bench/chaos.py).
    "outage": dict(scenario="chaos", miners=48, clients=48, duration_s=45, miner_procs=4,
                   rate=150.0),
    # OpenAI-compatible clients with `stream: true`; miners stream 20 words at 25 ms a word (an
    # answer takes 0.5 s), posting what is pending whenever the previous chunk post returned.
    "stream": dict(scenario="stream", miners=64, clients=64, duration_s=20, protocol="single",
                   stream=True, words=20, word_s=0.025),
}


def _batch_size(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"must be 1..64 (the server's limit), got {n}")
    return n


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="?", default="suite", choices=["suite", *SUITE, "trust"])
    p.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--postgres-url", default=os.environ.get(
        "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"))
    p.add_argument("--api-procs", type=int, default=2, help="API server processes")
    p.add_argument("--miners", type=int)
    p.add_argument("--clients", type=int)
    p.add_argument("--rate", type=float, help="jobs/s over all clients (default: closed loop)")
    p.add_argument("--duration", type=float)
    p.add_argument("--warmup", type=float)
    p.add_argument("--think", type=float, help="simulated model seconds per job")
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="miners lease and answer in batches (GET /job/batch once, then "
                        "POST /job/results?next= posts results and leases the next batch in one "
                        "request), batch-split (the results and the next GET /job/batch as two "
                        "requests, as before POST /job/results took `next`) or one job per "
                        "request (GET /job/next, POST /job/result); default batch, single for "
                        "steady-single")
    p.add_argument("--batch-max", type=_batch_size, metavar="1..64",
                   help="batch protocol: jobs a miner asks for per lease request (default 16)")
    p.add_argument("--miner-procs", type=int)
    p.add_argument("--client-procs", type=int)
    p.add_argument("--hoarders", type=int, metavar="K",
                   help="hoarding wallets beside the honest miners (bench/hoard.py), after the "
                        "same run without them; default 1 in hold, 0 elsewhere")
    p.add_argument("--cheat-after", type=int, metavar="N",
                   help="trust: each cheater answers honestly N times before it cheats (default 0)")
    p.add_argument("--trusted", type=int, metavar="K",
                   help="trust: honest wallets named in TRUSTED_MINERS, skipping probation")
    p.add_argument("--name", help="results file name (default: the scenario's)")
    p.add_argument("--no-save", action="store_true")
    return p.parse_args(argv)


def plan_for(name: str, args: argparse.Namespace, half_of: float | None = None) -> Plan:
    settings: dict[str, Any] = dict(SUITE[name])
    if name == "half-load":
        settings["rate"] = round(half_of / 2, 1) if half_of else 200.0
    for arg, key in (("miners", "miners"), ("clients", "clients"), ("rate", "rate"),
                     ("duration", "duration_s"), ("warmup", "warmup_s"), ("think", "think_s"),
                     ("miner_procs", "miner_procs"), ("client_procs", "client_procs"),
                     ("protocol", "protocol"), ("batch_max", "batch_max"),
                     ("hoarders", "hoarders")):
        if getattr(args, arg) is not None:
            settings[key] = getattr(args, arg)
    env: dict[str, str] = {}
    if name == "hold":  # a hoarded job comes back 75 s after it was leased, not 15 minutes;
        # honest miners (40 s of model, 60 s leases) never extend, so it does not touch them
        env = {"LEASE_MAX_TOTAL_S": "75"}
    if name in ("chaos", "outage"):  # leases of killed miners come back within seconds
        # (and with --hoarders, a hoarded job after 10 s)
        env = {"LEASE_SECONDS": "5", "REAPER_INTERVAL_S": "0.5", "RECONCILE_INTERVAL_S": "2",
               "RECONCILE_GRACE_S": "2", "LEASE_MAX_TOTAL_S": "10"}
    spec = Spec(database=args.db, postgres_url=args.postgres_url, api_procs=args.api_procs,
                worker=name in ("chaos", "outage"), env=env,
                private_cluster=name == "outage" and args.db == "postgres")
    return Plan(spec=spec, **settings)


def table(r: dict[str, Any]) -> str:
    a = r["audit"]
    rows = [
        ("scenario", f"{r['name']} ({r['database']}, uvicorn x{r['api_processes']}, "
                     f"{r['cores']} cores)"),
        ("load", f"{r['miners']} miners, {r['clients']} clients, rate "
                 f"{r['target_rate'] or 'closed loop'}, model {r['think_s']} s, {r['duration_s']} s"),
        ("miner protocol", r["protocol"] + (f" (up to {r['batch_max']} jobs per lease request)"
                                            if r["batch_max"] else "")),
        ("streamed chats/s" if r.get("stream") else "completed chat jobs/s",
         f"{r['jobs_per_s']} ({r['completed']} in the window)"),
        ("end-to-end ms p50/p95/p99", _triple(r["e2e_ms"])),
        *([("time to first token ms p50/p95/p99", _triple(r["ttft_ms"])),
           ("stream", f"{r['stream']['words']} words, {r['stream']['word_s']} s a word")]
          if r.get("stream") else []),
        ("dispatch ms p50/p95/p99", _triple(r["dispatch_ms"])),
        *([("check copies' dispatch ms", f"{_triple(r['check_dispatch_ms'])} "
                                         f"({r['check_dispatch_ms']['n']} copies)")]
          if r.get("check_dispatch_ms", {}).get("n") else []),
        ("GET /health ms p50/p99/max", f"{r['health_ms']['p50']} / {r['health_ms']['p99']} / "
                                        f"{r['health_ms']['max']} ({r['health_ms']['failures']} failed)"),
        ("CPU ms per job", ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_job"].items())),
        ("errors", ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "none"),
        ("peak RSS MiB (largest / sum)", f"{r['peak_rss']['max_process_mib']} / "
                                          f"{r['peak_rss']['sum_of_peaks_mib']}"),
        ("jobs: lost / duplicated", f"{a['lost']} / {a['duplicated']}  {a['by_status']}"),
        ("failed without reason", str(a["failed_without_reason"])),
        ("miner credits = completed", str(a["miner_credits_match"])),
    ]
    if any(r["restarts"].values()):
        rows.append(("kill -9 and restart" if r["name"] != "outage" else "down and back",
                     ", ".join(f"{k}: {v}" for k, v in r["restarts"].items())))
    if r.get("worker_running") is not None:
        rows.append(("worker still running", str(r["worker_running"])))
    if r.get("hoarding"):
        rows.extend(_hoarding_rows(r))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _hoarding_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    h = r["hoarding"]
    lim, jobs = h["limits"], h["jobs"]
    rows = [
        ("hoarders", f"{h['hoarders']}, {h['lanes_each']} lease requests open each; "
                     f"MINER_MAX_LEASES {lim['MINER_MAX_LEASES']}, MINER_MAX_POLLS "
                     f"{lim['MINER_MAX_POLLS']}, LEASE_MAX_TOTAL_S {lim['LEASE_MAX_TOTAL_S']}"),
        ("hoarder's most leases at once", f"{h['max_held']} in the database ({h['samples']} "
                                          f"samples), {h['max_held_own_view']} by its grants; "
                                          f"cap {lim['MINER_MAX_LEASES']}"),
        ("refused to hoarders", ", ".join(f"{k}: {v}" for k, v in sorted(h["refusals"].items()))
         or "nothing"),
        ("jobs hoarders held", f"{jobs['held']} ({h['leases']} leases, {h['extensions']} "
                               f"extensions): {jobs['completed_by_honest']} answered by honest "
                               f"miners, {jobs['failed']} failed, {jobs['open']} open"),
    ]
    if h.get("baseline"):
        ratio = f"{h['honest_ratio']:.0%}" if h["honest_ratio"] is not None else "n/a"
        rows.append(("honest jobs/s with / without", f"{h['honest_jobs_per_s']} / "
                                                     f"{h['baseline_jobs_per_s']} ({ratio})"))
        rows.append(("end-to-end p99 ms with / without", f"{r['e2e_ms']['p99']} / "
                                                         f"{h['baseline']['e2e_ms']['p99']}"))
    return rows


def _triple(d: dict[str, Any]) -> str:
    return f"{d['p50']} / {d['p95']} / {d['p99']}"


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = [*SUITE, "trust"] if args.scenario == "suite" else [args.scenario]
    full_rate: float | None = None
    ok = True
    for name in names:
        if name == "trust":  # its own run and report (bench/trust.py)
            from bench import trust
            ok = trust.main(args, RESULTS) == 0 and ok
            continue
        plan = plan_for(name, args, half_of=full_rate)
        chaos = {"chaos": monkey, "outage": outages}.get(name)
        baseline = None
        if plan.hoarders:  # the same run without them first: what the hoarders cost
            baseline = execute(dataclasses.replace(plan, hoarders=0), chaos=chaos)
            print(f"  without hoarders: {baseline['jobs_per_s']} jobs/s, end-to-end p99 "
                  f"{baseline['e2e_ms']['p99']} ms, lost / duplicated "
                  f"{baseline['audit']['lost']} / {baseline['audit']['duplicated']}", flush=True)
        result = execute(plan, chaos=chaos)
        if baseline is not None:
            compare(result, baseline)
        result = {"name": args.name or name, **result,
                  "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                              "platform": platform.platform()},
                  "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if name == "steady":
            full_rate = result["jobs_per_s"]
        print(table(result), flush=True)
        print(flush=True)
        if not args.no_save:
            RESULTS.mkdir(exist_ok=True)
            suffix = "" if args.db == "postgres" else f"-{args.db}"
            path = RESULTS / f"{args.name or name}{suffix}.json"
            path.write_text(json.dumps(result, indent=2) + "\n")
        wrong = problems(result)
        for problem in wrong:
            print(f"  FAILED: {problem}", flush=True)
        ok = ok and not wrong
    return 0 if ok else 1


def compare(result: dict[str, Any], baseline: dict[str, Any]) -> None:
    """Puts the run without hoarders beside the one with them, in result["hoarding"]."""
    h = result["hoarding"]
    h["honest_jobs_per_s"] = result["jobs_per_s"]
    h["baseline_jobs_per_s"] = baseline["jobs_per_s"]
    h["honest_ratio"] = (round(result["jobs_per_s"] / baseline["jobs_per_s"], 3)
                         if baseline["jobs_per_s"] else None)
    h["baseline"] = {k: baseline[k] for k in ("completed", "jobs_per_s", "e2e_ms",
                                               "dispatch_ms", "errors", "restarts", "audit")}


def problems(result: dict[str, Any]) -> list[str]:
    """Why the run fails the suite: a job lost, answered twice or failed without a reason (in
    the run, or in the run without hoarders beside it), or a hoarder not held to the limits."""
    audits = [("", result["audit"])]
    if result.get("hoarding") and result["hoarding"].get("baseline"):
        audits.append(("without hoarders: ", result["hoarding"]["baseline"]["audit"]))
    out = []
    for where, a in audits:
        for key in ("lost", "duplicated", "failed_without_reason"):
            if a[key]:
                out.append(f"{where}{a[key]} job(s) {key.replace('_', ' ')}")
    if result.get("worker_running") is False:
        out.append("the worker was not running at the end")
    if result.get("hoarding"):
        out.extend(hoarding_problems(result["hoarding"]))
    return out


if __name__ == "__main__":
    sys.exit(main())
