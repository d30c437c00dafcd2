"""Migration 0013 rebuilds chat_sessions (session ids scoped per business): every session keeps
its owner going up, and going down the first claimant of an id shared by two businesses keeps it.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.db import create_engine
from app.migrate import alembic_config, upgrade


def _run(url: str, *statements: str) -> list[tuple]:
    async def go() -> list[tuple]:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                rows: list[tuple] = []
                for sql in statements:
                    result = await conn.execute(text(sql))
                    if result.returns_rows:
                        rows = [tuple(r) for r in result.all()]
                return rows
        finally:
            await engine.dispose()
    return asyncio.run(go())


def test_0013_keeps_every_sessions_owner_both_ways(any_db: str) -> None:
    command.downgrade(alembic_config(any_db), "0009")
    _run(any_db,
         "INSERT INTO businesses (id, name, created_at, updated_at) VALUES "
         "(1, 'alpha', '2026-01-01', '2026-01-01'), (2, 'beta', '2026-01-01', '2026-01-01')",
         "INSERT INTO chat_sessions (session_id, business_id, created_at) VALUES "
         "('abc', 1, '2026-01-01'), ('def', 2, '2026-01-02'), ('anon-1', NULL, '2026-01-03')")
    upgrade(any_db)
    owners = "SELECT session_id, business_id FROM chat_sessions ORDER BY session_id, id"
    assert _run(any_db, owners) == [("abc", 1), ("anon-1", None), ("def", 2)]
    # now beta may have an "abc" of its own; the same business twice is refused
    _run(any_db, "INSERT INTO chat_sessions (session_id, business_id, created_at) "
                 "VALUES ('abc', 2, '2026-01-04')")
    with pytest.raises(IntegrityError):
        _run(any_db, "INSERT INTO chat_sessions (session_id, business_id, created_at) "
                     "VALUES ('abc', 2, '2026-01-05')")
    command.downgrade(alembic_config(any_db), "0009")
    assert _run(any_db, "SELECT session_id, business_id FROM chat_sessions "
                        "ORDER BY session_id") == [("abc", 1), ("anon-1", None), ("def", 2)]
    upgrade(any_db)
