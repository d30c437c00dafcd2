"""A business's turns are found through an index (migration 0018), not a scan of every
business's chat_logs: the retention sweep's and erasure's predicates, planned on the schema the
migrations build, SQLite and PostgreSQL. (The tables are nearly empty, so PostgreSQL is told not
to prefer a sequential scan; what is checked is that an index can serve the predicate.)"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Select, select, text

from app.accounts.erasure import of_business
from app.db import Database
from app.models import ChatLog

INDEX = "ix_chat_logs_business_id_timestamp"


async def plan(database_url: str, statement: Select[Any]) -> str:
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            conn = await session.connection()
            compiled = statement.compile(dialect=conn.dialect,
                                         compile_kwargs={"literal_binds": True})
            if conn.dialect.name == "postgresql":
                await session.execute(text("SET LOCAL enable_seqscan = off"))
                rows = (await session.execute(text(f"EXPLAIN {compiled}"))).all()
            else:
                rows = (await session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
    finally:
        await db.dispose()
    return "\n".join(str(r[-1]) for r in rows)


async def test_a_business_turns_are_planned_through_the_index(any_db: str) -> None:
    cutoff = datetime(2026, 1, 1, tzinfo=timezone.utc)
    retention = select(ChatLog.id).where(of_business(ChatLog.business_id, 7),
                                         ChatLog.timestamp < cutoff).limit(1)
    erasure = select(ChatLog.id).where(of_business(ChatLog.business_id, 7))
    for statement in (retention, erasure):
        assert INDEX in await plan(any_db, statement)
