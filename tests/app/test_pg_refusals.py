"""M2 (issue 23): PostgreSQL refusing connections is a 503 with Retry-After on a connection
that stays open, never a 500 (after which the server closes the keep-alive connection).

A real PostgreSQL refuses: the test run's private database stops accepting connections
(`ALLOW CONNECTIONS false`: SQLSTATE 55000 on connect) and its open sessions are ended
(`pg_terminate_backend`: 57P01 admin shutdown), as a restart or a managed failover would; a
role over its connection limit gets 53300 (too many connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
from sqlalchemy.engine import make_url

from tests.support.harness import running_app
from tests.support.live import live_server


class Conn:
    """One keep-alive HTTP/1.1 connection, spoken by hand so that a close is seen."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = b"" if body is None else orjson.dumps(body)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}",
                f"Content-Length: {len(data)}", "Content-Type: application/json",
                *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        found: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            k, v = line.decode().split(":", 1)
            found[k.strip().lower()] = v.strip()
        payload = await self.reader.readexactly(int(found.get("content-length", 0)))
        return status, found, orjson.loads(payload) if payload else None

    @property
    def open(self) -> bool:
        return not self.reader.at_eof()


@contextlib.asynccontextmanager
async def connect(base: str) -> AsyncIterator[Conn]:
    where = urlsplit(base)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        yield Conn(reader, writer, where.netloc)
    finally:
        writer.close()


def _dsn(url: str, **parts: Any) -> str:
    return make_url(url).set(drivername="postgresql", **parts).render_as_string(
        hide_password=False)


async def _admin(url: str) -> asyncpg.Connection:
    """A superuser session on the server's maintenance database, never the one refusing."""
    return await asyncpg.connect(_dsn(url, database="postgres"))


async def _refuse(url: str, refusing: bool, role: str | None = None) -> None:
    name = make_url(url).database
    admin = await _admin(url)
    try:
        try:
            if role is None:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {not refusing}')
            else:
                await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT '
                                    f'{0 if refusing else -1}')
        except asyncpg.InsufficientPrivilegeError as exc:
            pytest.skip(f"this PostgreSQL user cannot make the test database refuse "
                        f"connections (needs superuser or ownership): {exc}")
        if refusing:  # and end the sessions already open, as a restart does
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def limited_role(url: str) -> AsyncIterator[str]:
    """A login role (not a superuser: their connection limits are not enforced) with the
    rights the app needs on the test database; the app's URL as that role."""
    role = f"mia_lim_{uuid.uuid4().hex[:8]}"
    admin = await _admin(url)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD \'pw\'')
    except asyncpg.InsufficientPrivilegeError as exc:
        await admin.close()
        pytest.skip(f"this PostgreSQL user cannot create a role to limit: {exc}")
    try:
        db = await asyncpg.connect(_dsn(url))
        try:
            await db.execute(f'GRANT ALL ON SCHEMA public TO "{role}"; '
                             f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"; '
                             f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        finally:
            await db.close()
        yield make_url(url).set(username=role, password="pw").render_as_string(
            hide_password=False)
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE usename = $1", role)
        db = await asyncpg.connect(_dsn(url))
        try:
            await db.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"; '
                             f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "{role}"; '
                             f'REVOKE ALL ON SCHEMA public FROM "{role}"')
        finally:
            await db.close()
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def _refusals_answer_503(settings: Any, refuse: Any) -> None:
    async with running_app(settings) as api:
        key = await api.api_key("refused-co")
        business = {"Authorization": f"Bearer {key}"}
        with live_server(settings) as base:
            async with connect(base) as conn:
                # warm: the key is known, a job exists, both pools hold connections
                status, _, created = await conn.request("POST", "/chat", business,
                                                        {"message": "hi"})
                assert status == 202, created
                job = f"/chat/{created['job_id']}"
                assert (await conn.request("GET", job, business))[0] == 200
                history = f"/chat/sessions/{created['session_id']}/messages"  # via SQLAlchemy
                assert (await conn.request("GET", history, business))[0] == 200
                await refuse(True)
                try:
                    for _ in range(3):  # the pooled connections die, then every new one is refused
                        for method, path, body in (("POST", "/chat", {"message": "hi"}),
                                                   ("GET", job, None), ("GET", history, None)):
                            status, headers, answer = await conn.request(method, path, business,
                                                                         body)
                            assert status == 503, (method, path, status, answer)
                            assert answer["error"] == "database_unavailable", answer
                            assert headers["retry-after"] == "5"
                            assert headers.get("connection") != "close" and conn.open
                finally:
                    await refuse(False)
                # the same connection, served again once the database accepts
                assert (await conn.request("GET", job, business))[0] == 200
                assert (await conn.request("GET", history, business))[0] == 200
                assert (await conn.request("POST", "/chat", business, {"message": "x"}))[0] == 202


async def test_a_database_refusing_connections_is_a_503_on_a_kept_connection(  # type: ignore[no-untyped-def]
        settings_factory, postgres_db):
    await _refusals_answer_503(settings_factory(postgres_db),
                               lambda refusing: _refuse(postgres_db, refusing))


async def test_too_many_connections_is_a_503_on_a_kept_connection(  # type: ignore[no-untyped-def]
        settings_factory, postgres_db):
    async with limited_role(postgres_db) as url:
        role = make_url(url).username
        await _refusals_answer_503(settings_factory(url),
                                   lambda refusing: _refuse(postgres_db, refusing, role))


@pytest.mark.parametrize(("error", "when_connecting", "outage"), [
    (asyncpg.CannotConnectNowError, False, True),  # 57P03: starting up, shutting down
    (asyncpg.AdminShutdownError, False, True),  # 57P01: pg_terminate_backend, pg_ctl -m fast
    (asyncpg.CrashShutdownError, False, True),  # 57P02
    (asyncpg.TooManyConnectionsError, False, True),  # 53300
    (asyncpg.ReadOnlySQLTransactionError, False, True),  # 25006: a failover's old primary
    (asyncpg.ConnectionDoesNotExistError, False, True),
    (asyncpg.ObjectNotInPrerequisiteStateError, True, True),  # 55000 on connect: refusing
    (asyncpg.ObjectNotInPrerequisiteStateError, False, False),  # 55000 in a statement: a bug
    (asyncpg.UniqueViolationError, False, False),  # bugs stay 500s
    (asyncpg.UndefinedColumnError, False, False),
])
def test_which_postgresql_errors_are_refusals(error, when_connecting, outage) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import DBAPIError

    from app.db import DatabaseRefused, refused

    raw = error("refused")
    if when_connecting:  # as the hot path and SQLAlchemy report a failed connect
        wrapped: list[BaseException] = [DatabaseRefused("refused"),
                                        DBAPIError(None, None, Exception("adapted"))]
        wrapped[0].__cause__ = raw
        wrapped[1].orig.__cause__ = raw  # type: ignore[union-attr]
    else:
        wrapped = [raw, DBAPIError("SELECT 1", None, Exception("adapted"))]
        wrapped[1].orig.__cause__ = raw  # type: ignore[union-attr]
    assert [refused(e) for e in wrapped] == [outage, outage]
