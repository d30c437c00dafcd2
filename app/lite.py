"""The hot path on SQLite: the stdlib driver itself, one writer thread and one reader thread per
process, no SQLAlchemy. SQLite's counterpart of Database.pg (app/db.py opens it).

Why: through the ORM and aiosqlite a unit of work took the database's write lock at BEGIN
IMMEDIATE and held it across every `await` of its statements (each a thread hop and an event
loop turn), while the other connections of the pool slept in SQLite's busy handler (1..100 ms
back-offs) for it; the API process spent most of its CPU in SQLAlchemy's execution layer. Here a
unit is ONE synchronous function run on the writer thread between BEGIN IMMEDIATE and COMMIT,
so the lock is held for the statements alone (microseconds), writers of this process queue on
the thread instead of busy-waiting, and each step costs one thread hop. Other processes (a
second API process, the worker) still meet on the lock through busy_timeout.

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


def _connect(path: str) -> Conn:
    # isolation_level=None: the driver issues no BEGIN of its own; units say BEGIN IMMEDIATE.
    # The same PRAGMAs as the engine's connections (app/db.py): WAL lets reads run beside the
    # writer; synchronous=NORMAL syncs at checkpoints, not at every commit.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False,
                           cached_statements=256)
    conn.row_factory = sqlite3.Row
    for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON",
                   "synchronous=NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


class Lite:
    """A process's SQLite hot path: write() runs a function as one transaction on the writer
    thread, read() one on the reader thread (autocommit: a statement sees one snapshot)."""

    def __init__(self, path: str):
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="lite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="lite-reader")
        self._w = self._r = None  # type: Conn | None
        self._path = path

    def _write(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._w is None:
            self._w = _connect(self._path)
        conn = self._w
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn, *args)
        except BaseException:
            if conn.in_transaction:  # some errors (SQLITE_FULL, ...) have rolled it back already
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return out

    def _read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._r is None:
            self._r = _connect(self._path)
        return fn(self._r, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) in one transaction (BEGIN IMMEDIATE .. COMMIT; ROLLBACK if it
        raises), on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._write, fn,
                                                                args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) on the reader thread; one statement per call is one snapshot."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._read, fn,
                                                                args)

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return await self.read(lambda c: c.execute(sql, args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return await self.read(lambda c: c.execute(sql, args).fetchone())

    def close(self) -> None:
        for pool, conn in ((self._writer, self._w), (self._reader, self._r)):
            if conn is not None:
                pool.submit(conn.close).result()
            pool.shutdown(wait=True)
        self._w = self._r = None
