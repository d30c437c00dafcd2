"""Where the tests find Redis and PostgreSQL: the machine's own when running, else local ones."""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlparse

from app.localredis import LocalRedis, reachable

PG_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def machine_redis_url() -> str | None:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    parsed = urlparse(url)
    return url if reachable(parsed.hostname or "127.0.0.1", parsed.port or 6379) else None


def postgres_url() -> tuple[str | None, str]:
    """(url, reason): url is None when PostgreSQL cannot be reached, with the reason why."""
    url = os.environ.get("TEST_DATABASE_URL", PG_DEFAULT)
    if not url.startswith("postgresql"):
        return None, f"TEST_DATABASE_URL is not PostgreSQL: {url}"

    async def probe() -> None:
        import asyncpg

        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(dsn, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return None, f"PostgreSQL not reachable at {url} ({type(exc).__name__}): set TEST_DATABASE_URL"
    return url, ""


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def create_private_database(base_url: str) -> tuple[str | None, str]:
    """A database of this test run's own, so concurrent runs on one server never collide.
    Returns (url, name), or (None, why) when the server refuses CREATE DATABASE."""
    name = f"mia_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(_dsn(base_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except Exception as exc:
        # Never fall back to wiping the shared database: without our own, skip.
        return None, f"cannot CREATE DATABASE on {base_url} ({type(exc).__name__})"
    base, _, _ = base_url.rpartition("/")
    return f"{base}/{name}", name


def drop_private_database(base_url: str, name: str) -> None:
    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(_dsn(base_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def reset_postgres(url: str) -> None:
    async def reset() -> None:
        import asyncpg

        conn = await asyncpg.connect(_dsn(url))
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    asyncio.run(reset())


def delete_keys(redis_url: str, pattern: str) -> None:
    """Delete every key matching a SCAN pattern (a test's own prefix, never the whole Redis)."""
    import redis as redis_sync

    r = redis_sync.Redis.from_url(redis_url)
    try:
        keys = list(r.scan_iter(match=pattern, count=1000))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


__all__ = ["LocalRedis", "create_private_database", "delete_keys", "drop_private_database", "machine_redis_url",
           "postgres_url", "reset_postgres"]
