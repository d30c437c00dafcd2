"""The system under test, started by the bench itself: Redis, a database, the API, the worker.

Each run gets a private redis-server, a fresh database (a new PostgreSQL database beside the one
named, dropped afterwards, or a new SQLite file) and its own ports, so runs never see each other's
state and leave nothing behind. The processes can be killed and restarted (the chaos run does).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.localredis import LocalRedis, free_port

PG_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@dataclass
class Spec:
    database: str = "postgres"  # postgres | sqlite
    postgres_url: str = PG_DEFAULT
    api_procs: int = 1
    worker: bool = False  # also run `mia worker` (lease reaper, reconciler, RunPod idle jobs)
    env: dict[str, str] = field(default_factory=dict)
    # database == "postgres" on a PostgreSQL cluster of the run's own (PrivatePostgres), which
    # the outage run stops and starts; the machine's own server is never touched
    private_cluster: bool = False


def postgres_binaries() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (initdb, pg_ctl), if any."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    return Path(dirs[-1]) if dirs and (Path(dirs[-1]) / "pg_ctl").exists() else None


class PrivatePostgres:
    """A PostgreSQL cluster of one bench run (initdb + pg_ctl, on 127.0.0.1 and a free port,
    trust, no fsync), so a run can stop and start its database. PostgreSQL refuses to run as
    root: as root, the cluster belongs to the `postgres` system user."""

    def __init__(self) -> None:
        self.bin = postgres_binaries()
        if self.bin is None:
            raise SystemExit("no PostgreSQL server binaries (initdb, pg_ctl) on this machine; "
                             "the outage run needs them")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mia-bench-pg-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                owner = pwd.getpwnam(self.user)
            except KeyError:
                raise SystemExit("running as root without a `postgres` user: PostgreSQL "
                                 "will not run as root") from None
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, cwd=self.dir)

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """fast: every session is ended (57P01) and new ones refused until start()."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def private_postgres(url: str) -> tuple[str, Callable[[], None]]:
    """A fresh database beside the one named, so a run starts empty and leaves nothing behind."""
    import asyncpg

    name = f"mia_bench_{uuid.uuid4().hex[:8]}"
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return f"{url.rpartition('/')[0]}/{name}", drop


def postgres_reachable(url: str) -> bool:
    rest = url.split("@", 1)[-1].split("/", 1)[0]
    host, _, port = rest.partition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or 5432)), timeout=1).close()
        return True
    except OSError:
        return False


def process_tree(root: int) -> list[int]:
    """root and its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of one process in KiB; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
              if line.startswith(("VmRSS", "VmHWM"))}
    return int(values.get("VmRSS", 0)), int(values.get("VmHWM", 0))


class System:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.tmp = Path(tempfile.mkdtemp(prefix="mia-bench-"))
        self.redis = LocalRedis(workdir=self.tmp / "redis")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env: dict[str, str] = {}
        self.api: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self._drop_db: Callable[[], None] = lambda: None
        self.cluster: PrivatePostgres | None = None
        self._peaks: dict[int, int] = {}  # pid -> peak RSS KiB, for every server process seen
        self._sampling = threading.Event()
        self.restarts = {"api": 0, "worker": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> System:
        self.redis.start()
        if self.spec.database == "postgres" and self.spec.private_cluster:
            self.cluster = PrivatePostgres().start()
            db, _ = private_postgres(self.cluster.url)  # removed with the whole cluster
        elif self.spec.database == "postgres":
            if not postgres_reachable(self.spec.postgres_url):
                raise SystemExit(f"PostgreSQL is not reachable at {self.spec.postgres_url}; "
                                 "start it or use --db sqlite")
            db, self._drop_db = private_postgres(self.spec.postgres_url)
        else:
            db = f"sqlite+aiosqlite:///{self.tmp}/bench.db"
        self.env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": self.redis.url,
                    "REDIS_PREFIX": "bench", "LOG_LEVEL": "WARNING", "PORT": str(self.port),
                    "PUBLIC_URL": self.base_url,
                    # every simulated miner signs in from 127.0.0.1: one IP, thousands of wallets
                    "RATE_LIMIT_SIGNIN_PER_MIN": "0",
                    # the health probe asks 20 times a second
                    "RATE_LIMIT_HEALTH_PER_MIN": "0",
                    # the load scenarios measure the job path of an operator's own fleet: no
                    # wallet on probation (issue 18's verification sampling stays at its default,
                    # so its cost is in the figures); the trust scenario sets its own
                    "PROBATION_JOBS": "0", **self.spec.env}
        subprocess.run(self._mia("migrate"), env=self.env, check=True, capture_output=True)
        self.start_api()
        if self.spec.worker:
            self.start_worker()
        threading.Thread(target=self._sample_rss, daemon=True, name="rss").start()
        return self

    def stop(self) -> None:
        self._sampling.set()
        for proc in (self.api, self.worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.api, self.worker):
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.redis.stop()
        self._drop_db()
        if self.cluster is not None:
            self.cluster.remove()

    def __enter__(self) -> System:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _mia(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "app.cli", *args]

    def start_api(self) -> None:
        self.api = subprocess.Popen(
            self._mia("serve", "--port", str(self.port), "--workers", str(self.spec.api_procs)),
            env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.tmp / "api.log", "ab"),
            start_new_session=True)
        self.wait_healthy()

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(self._mia("worker"), env=self.env,
                                       stdout=subprocess.DEVNULL,
                                       stderr=open(self.tmp / "worker.log", "ab"),
                                       start_new_session=True)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(f"the API exited; see {self.tmp / 'api.log'}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the API did not become healthy; see {self.tmp / 'api.log'}")

    # -- chaos -------------------------------------------------------------------------------

    def kill_api(self) -> None:
        """kill -9 every API process (the server and its worker processes) at once."""
        if self.api is not None:
            _kill_group(self.api)
            self.api = None

    def kill_worker(self) -> None:
        if self.worker is not None:
            _kill_group(self.worker)
            self.worker = None

    def restart_api(self) -> None:
        self.kill_api()
        self.restarts["api"] += 1
        self.start_api()

    def restart_worker(self) -> None:
        self.kill_worker()
        self.restarts["worker"] += 1
        self.start_worker()

    def restart_redis(self, down_s: float) -> None:
        """Redis gone for down_s, then back empty on the same port (no persistence: the queue,
        leases' locks and rate buckets are lost; the database says what is queued)."""
        self.redis.stop()
        time.sleep(down_s)
        self.redis = LocalRedis(port=self.redis.port, workdir=self.tmp / "redis").start()
        self.restarts["redis"] = self.restarts.get("redis", 0) + 1

    def restart_postgres(self, down_s: float) -> None:
        """The run's own PostgreSQL stopped (its sessions ended), refusing connections for
        down_s, then started again."""
        if self.cluster is None:
            raise RuntimeError("only a run on its private cluster restarts PostgreSQL")
        self.cluster.stop("fast")
        time.sleep(down_s)
        self.cluster.start()
        self.restarts["postgres"] = self.restarts.get("postgres", 0) + 1

    def worker_running(self) -> bool | None:
        """None without a worker; else whether it is still running."""
        if not self.spec.worker:
            return None
        return self.worker is not None and self.worker.poll() is None

    # -- measurements ------------------------------------------------------------------------

    def redis_pids(self) -> list[int]:
        return [self.redis.proc.pid] if self.redis.proc is not None else []

    def server_pids(self) -> list[int]:
        pids = []
        for proc in (self.api, self.worker):
            if proc is not None and proc.poll() is None:
                pids.extend(process_tree(proc.pid))
        return pids

    def _sample_rss(self) -> None:
        while not self._sampling.wait(0.25):
            for pid in self.server_pids():
                _, peak = rss_kib(pid)
                if peak:
                    self._peaks[pid] = max(self._peaks.get(pid, 0), peak)

    def peak_rss_mib(self) -> dict[str, float]:
        """Largest single server process, and the sum of every process' peak (an upper bound of
        what the server side held at once)."""
        for pid in self.server_pids():
            _, peak = rss_kib(pid)
            self._peaks[pid] = max(self._peaks.get(pid, 0), peak)
        peaks = list(self._peaks.values()) or [0]
        return {"max_process_mib": round(max(peaks) / 1024, 1),
                "sum_of_peaks_mib": round(sum(peaks) / 1024, 1)}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (backends come and go with connections)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds spent by each part of the system between start() and stop(): which part
    bounds the throughput, measured rather than guessed."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]):
        self.groups = groups
        self.before: dict[str, dict[int, int]] = {}
        self.seconds: dict[str, float] = {}

    def _snap(self) -> dict[str, dict[int, int]]:
        return {name: {pid: cpu_ticks(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self.before = self._snap()

    def stop(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        after = self._snap()
        for name, now in after.items():
            was = self.before.get(name, {})
            self.seconds[name] = round(sum(t - was.get(pid, 0) for pid, t in now.items()) / hz, 2)
