"""The hot path on SQLite: the stdlib driver itself, no SQLAlchemy. SQLite's counterpart of
Database.pg (app/db.py opens it).

Why: through the ORM and aiosqlite a unit of work took the database's write lock at BEGIN
IMMEDIATE and held it across every `await` of its statements (each a thread hop and an event
loop turn), while the other connections of the pool slept in SQLite's busy handler (1..100 ms
back-offs) for it; the API process spent most of its CPU in SQLAlchemy's execution layer.

Here a unit is ONE synchronous function between BEGIN IMMEDIATE and COMMIT, run on the event
loop's own thread: its statements take tens to hundreds of microseconds, less than a hop to a
thread would (a thread also gives up the GIL at every statement and waits up to the switch
interval, 5 ms, to get it back: with the write lock held, measured at 7-10 ms per unit under
`bench steady`). The loop never waits for the lock: its connection has busy_timeout=0, and a
unit that finds the database busy (another process, the worker, or an ORM transaction of this
one holds the lock) runs instead on the writer thread, whose connection waits for it
(busy_timeout); reads likewise. The loop's connection never checkpoints the WAL (that fsyncs):
the writer thread does, every CHECKPOINT_EVERY commits.

Times go in and come out as SQLAlchemy's SQLite DateTime stores them (naive UTC text,
'YYYY-MM-DD HH:MM:SS.ffffff'), so rows written here and through the ORM compare as equals.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")
Conn = sqlite3.Connection


def db_time(t: datetime | None) -> str | None:
    """An aware time as a UTCDateTime column stores it on SQLite (naive UTC, microseconds)."""
    if t is None:
        return None
    t = t.astimezone(UTC)
    return (f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:"
            f"{t.second:02d}.{t.microsecond:06d}")


def read_time(text: str | None) -> datetime | None:
    """A stored time, aware again."""
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def _connect(path: str, *, waits: bool) -> Conn:
    # isolation_level=None: the driver issues no BEGIN of its own; units say BEGIN IMMEDIATE.
    # The same PRAGMAs as the engine's connections (app/db.py): WAL lets reads run beside the
    # writer; synchronous=NORMAL syncs at checkpoints, not at every commit.
    conn = sqlite3.connect(path, timeout=30 if waits else 0, isolation_level=None,
                           check_same_thread=False, cached_statements=256)
    conn.row_factory = sqlite3.Row
    pragmas = ["journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL",
               f"busy_timeout={30000 if waits else 0}"]
    if not waits:
        pragmas.append("wal_autocheckpoint=0")  # the writer thread checkpoints
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    return conn


CHECKPOINT_EVERY = 500  # commits on the loop's connection between the writer's checkpoints


class _Busy(Exception):
    """The loop's connection found the database locked: the unit goes to the writer thread."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) \
        or "locked" in str(exc)


def _transaction(conn: Conn, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn, *args)
    except BaseException:
        if conn.in_transaction:  # some errors (SQLITE_FULL, ...) have rolled it back already
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return out


class Lite:
    """A process's SQLite hot path: write() runs a function as one transaction, read() one
    read, each on the event loop's thread unless the database is busy (then on a thread of
    its own that waits for it)."""

    def __init__(self, path: str):
        self._path = path
        self._now = _connect(path, waits=False)  # the loop's: never waits
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="lite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="lite-reader")
        self._w: Conn | None = None
        self._r: Conn | None = None
        self._commits = 0

    def _waiting_writer(self) -> Conn:
        if self._w is None:
            self._w = _connect(self._path, waits=True)
        return self._w

    def _waiting_reader(self) -> Conn:
        if self._r is None:
            self._r = _connect(self._path, waits=True)
        return self._r

    def _checkpoint(self) -> None:
        self._waiting_writer().execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) in one transaction (BEGIN IMMEDIATE .. COMMIT; ROLLBACK if it
        raises). fn must not await: it runs on the loop, or, if the database is busy, on the
        writer thread."""
        loop = asyncio.get_running_loop()
        try:
            try:
                out = _transaction(self._now, fn, args)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                raise _Busy() from None
        except _Busy:
            return await loop.run_in_executor(
                self._writer, lambda: _transaction(self._waiting_writer(), fn, args))
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0:
            loop.run_in_executor(self._writer, self._checkpoint)
        return out

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) outside a transaction (one statement is one snapshot)."""
        try:
            return fn(self._now, *args)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        return await asyncio.get_running_loop().run_in_executor(
            self._reader, lambda: fn(self._waiting_reader(), *args))

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return await self.read(lambda c: c.execute(sql, args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return await self.read(lambda c: c.execute(sql, args).fetchone())

    def close(self) -> None:
        for pool, conn in ((self._writer, self._w), (self._reader, self._r)):
            if conn is not None:
                pool.submit(conn.close).result()
            pool.shutdown(wait=True)
        self._now.close()
        self._w = self._r = None
