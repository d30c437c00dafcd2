"""Engine and session factory. SQLite (aiosqlite) by default, PostgreSQL (asyncpg) in production.

The route or task that opens a transaction owns commit/rollback; services take its session and
execute. What must happen in Redis because of a write (a queue push, a wake-up, an arq enqueue)
is registered with after_commit() and runs only once the transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from app.errors import ServiceUnavailable
from app.lite import Lite

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


log = logging.getLogger(__name__)
Effect = Callable[[], Awaitable[object]]
_EFFECTS = "mia_after_commit"


class PgUnit:
    """A transaction on the PostgreSQL hot path: the driver's own connection (asyncpg) and what
    to do after it commits. Database.fast() opens it."""

    def __init__(self, conn: asyncpg.Connection | None):
        self.conn = conn  # None: the unit's statement runs in a group (app/chat/group.py)
        self.info: dict[str, Any] = {}


class LiteUnit:
    """The hot path's unit on SQLite (app/lite.py): each step it runs is its own transaction
    (one hop to the writer thread); what after_commit() registered runs after the unit ends."""

    def __init__(self, lite: Lite):
        self.lite = lite
        self.info: dict[str, Any] = {}


Unit = AsyncSession | PgUnit | LiteUnit  # what a route's transaction hands to the services


def after_commit(unit: Unit, effect: Effect, *, what: str, required: bool = False) -> None:
    """Run `effect()` once the unit's transaction has committed (never if it rolls back).
    A failing effect is logged with `what`; a `required` one also raises to the caller, after
    the others have run. The rest are covered by a timer (the reconciler, waiters' re-reads)."""
    unit.info.setdefault(_EFFECTS, []).append((effect, what, required))


async def _run_effects(unit: Unit) -> None:
    raised: BaseException | None = None
    for effect, what, required in unit.info.pop(_EFFECTS, ()):
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


async def run_effects(unit: Unit) -> None:
    """Run what after_commit() registered, for a unit whose statement was committed by someone
    else on its behalf (a group commit, app/chat/group.py)."""
    await _run_effects(unit)


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
        # Erased customer content (app/accounts/erasure.py) must not survive in the file's free
        # pages: deleted and overwritten cells are zeroed, not left for a file scan to find.
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        writes = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


WRITE_OPTION = "mia_unit_of_work"


class PoolBusy(Exception):
    """Every hot-path connection stayed in use for DB_POOL_TIMEOUT_S (answered as 503)."""


class DatabaseRefused(Exception):
    """The hot path's PostgreSQL refused a new connection (answered as 503)."""


# PostgreSQL refusing work for now, as a restart, a managed failover or a full server does
# (SQLSTATE prefixes): connection exceptions (08), insufficient resources (53: too many
# connections), admin or crash shutdown and "cannot connect now" (57P01-57P03), a standby that
# refuses writes (25006). app/main.py answers them 503 with Retry-After; any other database
# error is a bug and stays a logged 500. They came through as 500s, each closing the client's
# keep-alive connection: asyncpg raises them as they are, SQLAlchemy as a bare DBAPIError.
REFUSALS = ("08", "53", "57P01", "57P02", "57P03", "25006")
# "database ... is not currently accepting connections" (ALLOW_CONNECTIONS false, a database
# being dropped or restored) is 55000, a state that statements that are bugs raise too: a
# refusal only when connecting.
REFUSALS_ON_CONNECT = ("55000",)


def _wrapped(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps (SQLAlchemy's `orig`, causes, contexts), each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]


def refused(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is PostgreSQL refusing for now rather than a bug."""
    # SQLAlchemy wraps a failed connect without a statement
    connecting = isinstance(exc, DatabaseRefused) or (isinstance(exc, DBAPIError)
                                                       and exc.statement is None)
    for e in _wrapped(exc):
        # InternalClientError: the driver lost track of a connection the server ended mid-way
        # ("cannot switch to state ...; another operation is in progress"), seen on restarts
        if isinstance(e, asyncpg.PostgresConnectionError | asyncpg.InterfaceError
                      | asyncpg.InternalClientError):
            return True
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str) and (state.startswith(REFUSALS)
                                       or (connecting and state in REFUSALS_ON_CONNECT)):
            return True
    return False


# PostgreSQL ending a transaction to let another go on: a deadlock's victim (40P01) or a
# serialization failure (40001). Nothing of it was written; the same request again may pass.
CONFLICTS = ("40P01", "40001")


def conflict(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is PostgreSQL's CONFLICTS."""
    return any(getattr(e, "sqlstate", None) in CONFLICTS for e in _wrapped(exc))


# What a dependency failing raises (answered 503 by outage() below), beside the bugs some of
# these classes also carry (outage() tells them apart).
OUTAGES: tuple[type[BaseException], ...] = (
    PoolTimeout, DBAPIError, PoolBusy, DatabaseRefused, asyncpg.PostgresError,
    asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError, ConnectionError)


def outage(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 (with Retry-After) for a database, or another dependency, that hangs or
    refuses, or for a transaction PostgreSQL ended to resolve a conflict (conflict()); None
    when `exc` is a bug (a statement PostgreSQL rejects for what it says): that stays a logged
    500. Refusing or hanging: a pool exhausted for DB_POOL_TIMEOUT_S, a statement over
    DB_COMMAND_TIMEOUT_S (asyncpg raises a bare TimeoutError), a refused connection, SQLite
    locked past its busy timeout, PostgreSQL refusing for now (refused(): shutting down,
    starting up, too many connections, not accepting connections)."""
    if conflict(exc):
        return ServiceUnavailable("the database ended this request's transaction to resolve a "
                                  "conflict with another (a deadlock or a serialization "
                                  "failure); retry", code="database_conflict",
                                  headers={"Retry-After": "1"})
    if isinstance(exc, DBAPIError) and not (isinstance(exc, OperationalError)
                                            or exc.connection_invalidated or refused(exc)):
        return None
    if isinstance(exc, asyncpg.PostgresError) and not (
            isinstance(exc, asyncpg.QueryCanceledError) or refused(exc)):
        return None
    if isinstance(exc, PoolTimeout | PoolBusy):
        code, detail = "database_busy", "every database connection is in use; retry later"
    elif isinstance(exc, DBAPIError | asyncpg.PostgresError | asyncpg.InterfaceError
                    | asyncpg.InternalClientError | DatabaseRefused):
        code, detail = "database_unavailable", "the database is unavailable; retry later"
    elif isinstance(exc, TimeoutError):
        code, detail = "dependency_timeout", ("the database (or another dependency) did not "
                                              "answer in time; retry later")
    elif isinstance(exc, ConnectionError):
        code, detail = "dependency_unavailable", ("the database (or another dependency) "
                                                  "refused the connection; retry later")
    else:
        return None
    return ServiceUnavailable(detail, code=code, headers={"Retry-After": "5"})


async def keep_session(conn: asyncpg.Connection) -> None:
    """The hot-path pool's reset on release: nothing beyond what asyncpg always does first.

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release, a round trip that cost about 9 % of the API's CPU per chat job. asyncpg
    still does, without a round trip unless needed, the part that matters (Connection._reset,
    asyncpg >= 0.30): an open transaction, managed or not, failed or not, is rolled back and
    listener callbacks are dropped. The rest is safe to skip because the hot path leaves no
    session state behind: its statements are plain DML and SELECTs (prepared statements are
    per connection by design and are meant to outlive a release).

    What would make it UNSAFE, on a connection of this pool (Database.fast/fast_reads): a
    `SET` without LOCAL (or set_config(..., false)), LISTEN, a temporary table, a session
    advisory lock (pg_advisory_lock; the _xact_ kind is fine), a cursor WITH HOLD. Each would
    leak to the next user of the connection. Do those on the engine's sessions, or scoped to
    the transaction (SET LOCAL, pg_advisory_xact_lock). tests/app/test_db_pool.py shows a
    session SET leaking (the accepted behaviour) and failed transactions rolled back."""
    del conn


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
        self.pg: asyncpg.Pool | None = None
        """PostgreSQL only, after open(): the hot path's own pool (see fast())."""
        self.lite: Lite | None = None
        """SQLite (a file) only, after open(): the hot path's writer and reader (app/lite.py)."""
        self._pool_size, self._command_timeout_s = pool_size, command_timeout_s
        self._pool_timeout_s = pool_timeout_s

    async def open(self) -> None:
        """On PostgreSQL, the hot path's pool: the chat job's statements run on asyncpg itself,
        written once as SQL and prepared per connection, because SQLAlchemy's execution layer
        (session, greenlet hand-offs, statement compilation) cost 5-10x the driver's own time
        per transaction here. Everything else uses the engine. Connections open on first use
        (min_size=0), so a start with the database down still answers 503s, as the engine does."""
        if is_sqlite(self.url):
            path = make_url(self.url).database
            if self.lite is None and path and path != ":memory:":
                self.lite = Lite(path)
            return
        if self.pg is not None:
            return
        dsn = make_url(self.url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        self.pg = await asyncpg.create_pool(
            dsn, min_size=0, max_size=self._pool_size, command_timeout=self._command_timeout_s,
            max_inactive_connection_lifetime=300, reset=keep_session)

    @property
    def hot(self) -> bool:
        """Whether the hot path runs on the drivers themselves (self.pg or self.lite)."""
        return self.pg is not None or self.lite is not None

    @asynccontextmanager
    async def fast(self, *, transaction: bool = True) -> AsyncIterator[PgUnit | LiteUnit]:
        """A hot-path unit on PostgreSQL (only where self.pg is open): commits on success, rolls
        back on any exception, then runs what after_commit() registered. transaction=False for
        a unit of ONE statement, which is atomic by itself (saves BEGIN and COMMIT). On SQLite
        (self.lite) each step of the unit is a transaction of its own."""
        if self.lite is not None:
            lite_unit = LiteUnit(self.lite)
            yield lite_unit
            await _run_effects(lite_unit)
            return
        async with self.fast_reads() as conn:
            unit = PgUnit(conn)
            if transaction:
                async with conn.transaction():
                    yield unit
            else:
                yield unit
        await _run_effects(unit)

    @asynccontextmanager
    async def fast_reads(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled hot-path connection (autocommit: one statement is one transaction). A pool
        with no free connection for DB_POOL_TIMEOUT_S is PoolBusy, answered as 503."""
        if self.pg is None:
            raise RuntimeError("the hot path needs PostgreSQL and Database.open()")
        try:
            conn = await self.pg.acquire(timeout=self._pool_timeout_s)
        except TimeoutError:
            raise PoolBusy() from None
        except asyncpg.PostgresError as exc:  # opening a connection: the server said no
            if exc.sqlstate in REFUSALS_ON_CONNECT:
                raise DatabaseRefused(str(exc)) from exc
            raise
        try:
            yield conn
        finally:
            try:
                await self.pg.release(conn)
            except Exception as exc:
                # Resetting a connection the server ended (a restart) fails; asyncpg has closed
                # it and opens a new one on the next acquire. The unit's own outcome stands: a
                # commit that happened is not turned into an error, an error is not replaced.
                log.warning("a hot-path connection could not be reset (%s); it was closed",
                            type(exc).__name__)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on any exception; after the
        commit, runs what was registered with after_commit()."""
        async with self._units() as session:
            async with session.begin():
                yield session
            await _run_effects(session)

    async def dispose(self) -> None:
        if self.lite is not None:
            self.lite.close()
            self.lite = None
        if self.pg is not None:
            await self.pg.close()
        await self.engine.dispose()
        if self.probe_engine is not self.engine:
            await self.probe_engine.dispose()
