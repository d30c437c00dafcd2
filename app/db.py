"""Engine and session factory. SQLite (aiosqlite) by default, PostgreSQL (asyncpg) in production.

The route or task that opens a transaction owns commit/rollback; services take its session and
execute. What must happen in Redis because of a write (a queue push, a wake-up, an arq enqueue)
is registered with after_commit() and runs only once the transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


log = logging.getLogger(__name__)
Effect = Callable[[], Awaitable[object]]
_EFFECTS = "mia_after_commit"


def after_commit(session: AsyncSession, effect: Effect, *, what: str,
                 required: bool = False) -> None:
    """Run `effect()` once the session's transaction has committed (never if it rolls back).
    A failing effect is logged with `what`; a `required` one also raises to the caller, after
    the others have run. The rest are covered by a timer (the reconciler, waiters' re-reads)."""
    session.info.setdefault(_EFFECTS, []).append((effect, what, required))


async def _run_effects(session: AsyncSession) -> None:
    raised: BaseException | None = None
    for effect, what, required in session.info.pop(_EFFECTS, ()):
        try:
            await effect()
        except Exception as exc:
            if required and raised is None:
                raised = exc
            else:
                log.warning("after commit, %s failed (%s); it is retried by its timer", what,
                            type(exc).__name__)
    if raised is not None:
        raise raised


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10, command_timeout_s: float | None = None,
                  pool_timeout_s: float = 30.0) -> AsyncEngine:
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _make_sqlite_serializable(engine)
        return engine
    # No pre-ping: it costs a round trip on every checkout. A connection that died with its
    # server fails its first statement instead; SQLAlchemy then invalidates the pool, that
    # request answers 503 with Retry-After (app/main.py) and the next one reconnects.
    return create_async_engine(url, pool_size=pool_size, max_overflow=2 * pool_size,
                               pool_recycle=1800, pool_timeout=pool_timeout_s,
                               connect_args=_pg_timeouts(command_timeout_s))


def _pg_timeouts(seconds: float | None) -> dict[str, float]:
    # asyncpg: a statement (and a connection attempt) taking longer raises TimeoutError, and
    # the statement is cancelled on the server; app.main answers 503 for it.
    return {} if seconds is None else {"command_timeout": seconds, "timeout": seconds}


def _make_sqlite_serializable(engine: AsyncEngine) -> None:
    """SQLite upgrades a read transaction to a write lock lazily and fails with SQLITE_BUSY when
    another writer got there first. Units of work (Database.transaction) therefore take the
    write lock at BEGIN (IMMEDIATE) and queue on busy_timeout instead; plain reads BEGIN
    DEFERRED, and WAL lets them run beside a writer."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        writes = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


WRITE_OPTION = "mia_unit_of_work"


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, command_timeout_s: float | None = None,
                 pool_timeout_s: float = 30.0):
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, command_timeout_s=command_timeout_s,
                                    pool_timeout_s=pool_timeout_s)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        """For reads. Anything that writes goes through transaction()."""
        self._units = async_sessionmaker(self.engine.execution_options(**{WRITE_OPTION: True}),
                                         expire_on_commit=False)
        # One-statement reads on PostgreSQL skip BEGIN and ROLLBACK (two round trips of three);
        # a single statement sees one snapshot anyway. SQLite reads are in-process: no gain.
        self.reads = self.sessions if is_sqlite(url) else async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
        """For a read of ONE statement (a row by key); several statements use sessions()."""
        # /health asks the database on a connection of its own: behind a busy pool it would
        # time the queue, not the database, and a prober would restart a healthy, busy process.
        self.probe_engine = self.engine if is_sqlite(url) else create_engine(
            url, pool_size=1, command_timeout_s=command_timeout_s, pool_timeout_s=pool_timeout_s)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on any exception; after the
        commit, runs what was registered with after_commit()."""
        async with self._units() as session:
            async with session.begin():
                yield session
            await _run_effects(session)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.probe_engine is not self.engine:
            await self.probe_engine.dispose()
