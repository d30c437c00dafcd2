"""Commands are written under asyncio.timeout, not asyncio.wait_for (app/redis_client.py
TimedConnection): the bound on a write that cannot finish is kept, without a Task per command."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import TimeoutError as RedisTimeout

from app.redis_client import TimedConnection, open_redis


async def test_commands_are_answered_through_the_timed_connection(redis_url) -> None:  # type: ignore[no-untyped-def]
    client = open_redis(redis_url, command_timeout_s=2.0)
    try:
        assert client.connection_pool.connection_class is TimedConnection
        await client.set("mia-test:timed", "1", ex=5)
        assert await client.get("mia-test:timed") == b"1"
        conn = await client.connection_pool.get_connection()
        try:
            assert conn.socket_timeout == 2.0  # put back after each write
        finally:
            await client.connection_pool.release(conn)
    finally:
        await client.aclose()


async def test_a_write_to_a_server_that_stops_reading_times_out() -> None:
    """A 'Redis' that accepts and never reads: once the socket buffers are full, the write
    waits; it must give up after the command timeout and drop the connection."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = open_redis(f"redis://127.0.0.1:{port}/0", command_timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeout, match="writing"):
            await client.set("k", b"x" * (64 * 1024 * 1024))
        assert time.monotonic() - started < 5
    finally:
        await client.aclose()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
