"""The schema the app runs on is the one `alembic upgrade head` builds, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect

from app.db import create_engine
from app.migrate import upgrade
from app.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Built by `alembic upgrade head` for this test: never conftest's copied SQLite template or
    emptied PostgreSQL schema, which this test is what vouches for."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
        upgrade(url)
        return url
    fresh = request.getfixturevalue("_fresh_postgres")  # skips without PostgreSQL
    fresh.rebuild()
    return str(fresh.url)


def test_upgrade_head_builds_every_model_table(any_db: str) -> None:
    async def tables() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        engine = create_engine(any_db)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: (
                    {t: {col["name"] for col in inspect(c).get_columns(t)}
                     for t in inspect(c).get_table_names()},
                    {t: {ix["name"] for ix in inspect(c).get_indexes(t)}
                     for t in inspect(c).get_table_names()}))
        finally:
            await engine.dispose()

    found, indexes = asyncio.run(tables())
    for table in Base.metadata.sorted_tables:
        assert table.name in found, table.name
        assert {c.name for c in table.columns} == found[table.name], table.name
        declared = {ix.name for ix in table.indexes}
        assert declared <= indexes[table.name], (table.name, declared - indexes[table.name])
    assert "alembic_version" in found
