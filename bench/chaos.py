"""The chaos monkey of `python -m bench chaos`: kill -9 and restart, at random, during the window.

Victims: every API process at once, the arq worker, or one of the miner processes (its miners
vanish mid-lease, as a crashed GPU box would; a fresh process with new wallets takes its place).
Afterwards the run's audit checks that every chat ended completed or failed with a reason, none
answered twice, none lost, and the miners' credits equal the completed jobs.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

from bench.system import System

SEED = int(os.environ.get("BENCH_CHAOS_SEED", "7"))


def monkey(system: System, miners: list[Any], end: float) -> None:
    from bench.run import start_load  # run imports this module's caller; import late

    rng = random.Random(SEED)
    system.restarts["miner_processes"] = 0
    victims: list[str] = []
    while True:
        time.sleep(rng.uniform(2.0, 5.0))
        if time.time() > end - 2:
            return
        if not victims:  # every kind of victim once per round, in a random order
            victims = ["api", "worker", "miners"]
            rng.shuffle(victims)
        victim = victims.pop()
        if victim == "api":
            system.restart_api()
        elif victim == "worker":
            system.restart_worker()
        else:
            alive = [m for m in miners if m.alive]
            if len(alive) < 2:
                continue
            target = rng.choice(alive)
            os.kill(target.proc.pid, signal.SIGKILL)
            target.alive = False
            target.proc.join()
            fresh = start_load(target.role)
            fresh.conn.recv()  # signed in
            fresh.conn.send((time.time(), end))
            miners.append(fresh)
            system.restarts["miner_processes"] += 1


OUTAGE_S = float(os.environ.get("BENCH_OUTAGE_S", "3"))  # how long each one is down


def outages(system: System, miners: list[Any], end: float) -> None:
    """The monkey of `python -m bench outage`: the run's own Redis and PostgreSQL go down for
    OUTAGE_S and come back, in turn, during the window. Redis comes back empty (the database
    says what is queued); PostgreSQL ends every session and refuses connections while down.
    The API processes and the worker are never restarted: they must ride it out."""
    del miners  # the miners and clients keep going, retrying what is refused
    rng = random.Random(SEED)
    victims = ["redis", "postgres"]
    rng.shuffle(victims)
    turn = 0
    while True:
        time.sleep(rng.uniform(3.0, 6.0))
        if time.time() + OUTAGE_S > end - 2:
            return
        victim = victims[turn % 2]
        turn += 1
        if victim == "redis":
            system.restart_redis(OUTAGE_S)
        else:
            system.restart_postgres(OUTAGE_S)
