"""Shared fixtures: real Redis (the machine's, else a local redis-server), real SQLite and
PostgreSQL schemas built with `alembic upgrade head` (once a session: a test gets a copy of the
SQLite file, or the PostgreSQL schema emptied back to what the migrations left), and the app
running in-process."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.migrate import upgrade
from tests.support.fresh_postgres import FreshPostgres
from tests.support.harness import Harness, running_app
from tests.support.services import (LocalRedis, create_private_database, delete_keys,
                                    drop_private_database,
                                    machine_redis_url, postgres_url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = machine_redis_url()
    if url is not None:
        yield url
        return
    local = LocalRedis().start()  # no Redis running here: a private one for this test run
    try:
        yield local.url
    finally:
        local.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A redis-server of the test's own, to stop, flush, freeze or read counts from (INFO) without
    touching what other tests (or other pytest-xdist workers) do on the shared one."""
    server = LocalRedis(workdir=tmp_path / "redis").start()
    yield server
    if server.proc is not None:  # a test may have left it frozen (SIGSTOP)
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "mia.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    url, reason = postgres_url()
    if url is None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    private, name = create_private_database(url)
    if private is None:
        pytest.skip(f"PostgreSQL tests skipped: {name}")
    yield private
    drop_private_database(url, name)


@pytest.fixture(scope="session")
def _fresh_postgres(postgres_base: str) -> FreshPostgres:
    return FreshPostgres(postgres_base)


@pytest.fixture
def postgres_db(_fresh_postgres: FreshPostgres) -> str:
    """The schema of `alembic upgrade head` and no rows: migrated for real once, and again after
    any test that changed the schema; emptied in between (tests/support/fresh_postgres.py)."""
    _fresh_postgres.prepare()
    return _fresh_postgres.url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_db")


def make_settings(database_url: str, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        database_url=database_url, redis_url=redis_url,
        redis_prefix=f"test-{uuid.uuid4().hex[:10]}", public_url="http://mia.test",
        chain_id=31337, lease_seconds=30, reaper_interval_s=0.1, reconcile_interval_s=0.5,
        reconcile_grace_s=0.3,
        # trust (app/trust) off unless a test turns it on: one-miner tests answer every job and
        # no check job appears uninvited; tests/trust sets these itself
        probation_jobs=0, verify_sample_rate=0.0, canary_rate=0.0,
        metrics_cache_s=0,  # tests read /metrics right after a change; its cache has its own test
        gc_freeze=False)  # each app a test starts would freeze the test run's objects
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings_factory(redis_url: str, sqlite_url: str) -> Iterator:
    made: list[Settings] = []

    def factory(database_url: str | None = None, **overrides: object) -> Settings:
        s = make_settings(database_url or sqlite_url, overrides.pop("redis_url", redis_url),
                          **overrides)
        made.append(s)
        return s

    yield factory
    for s in made:
        try:
            delete_keys(s.redis_url, f"{s.redis_prefix}:*")
        except Exception:
            pass


@pytest.fixture
async def api(settings_factory) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as harness:
        yield harness


# --- the local RunPod stand-in (app/runpod/standin.py), shared by tests/runpod, idle, jobs ------
# `runpod_standin` yields app.runpod.standin.StandinServer: .base_url, .api_key, .endpoint_id,
# .set_mode(**switches), .state.stats. One uvicorn server per session on 127.0.0.1 (free port),
# reset before and after each test (no jobs, initial mode, zeroed stats).

from app.runpod.standin import StandinServer  # noqa: E402

STANDIN_API_KEY = "rp-test-key-5f3c9a1e7d"


@pytest.fixture(scope="session")
def _runpod_standin_server() -> Iterator[StandinServer]:
    with StandinServer(STANDIN_API_KEY, mode={"processing_s": 0.1}) as server:
        yield server


@pytest.fixture
def runpod_standin(_runpod_standin_server: StandinServer) -> Iterator[StandinServer]:
    _runpod_standin_server.reset()
    yield _runpod_standin_server
    _runpod_standin_server.reset()


@pytest.fixture
def chain_node_url() -> Iterator[str]:
    """chain.node (eth-tester behind JSON-RPC over HTTP, what make dev runs) on a free port."""
    import threading

    from chain.node import make_server

    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
