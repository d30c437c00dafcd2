"""The SQLite driver under SQLAlchemy's connection ending.

SQLAlchemy ends a connection whose task was cancelled mid-statement by a shielded close() and,
if that is cancelled too, a forced stop() (aiosqlite >= 0.22.1 has it; the dialect calls it
`terminate`). aiosqlite 0.22.x then hangs a later close() of the same connection: close() queues
a second stop behind the first, whose worker thread has already exited, and awaits it forever.
A `make test` run hung 300 s in an event loop's teardown that way (nothing timed, no aiosqlite
thread alive). pyproject.toml keeps aiosqlite below 0.22 for it; this fails if a version that
hangs comes back."""

from __future__ import annotations

import asyncio

import aiosqlite


async def test_a_stopped_connection_still_closes() -> None:
    conn = await aiosqlite.connect(":memory:")
    stop = getattr(conn, "stop", None)
    if stop is None:
        # This version has no stop(): SQLAlchemy's dialect has no terminate for it and ends a
        # cancelled connection with close() alone, which must return.
        await asyncio.wait_for(conn.close(), 5)
        return
    stop()
    try:
        await asyncio.wait_for(conn.close(), 5)
    except TimeoutError:
        raise AssertionError(
            f"aiosqlite {aiosqlite.__version__}: close() after stop() never returns") from None
