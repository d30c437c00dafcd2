"""conftest's `postgres_db` (tests/support/fresh_postgres.py): every test starts on the schema of
`alembic upgrade head` with no rows, whether the previous test only wrote rows (emptied) or
changed the schema (rebuilt from the migrations)."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from app.migrate import alembic_config
from tests.support.fresh_postgres import FINGERPRINT, FreshPostgres, _dsn


def _sql(url: str, statement: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(_dsn(url))
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()
    return asyncio.run(run())


def _insert_business(url: str, name: str) -> object:
    return _sql(url, "INSERT INTO businesses (name, created_at, updated_at) VALUES "
                     f"('{name}', now(), now()) RETURNING id")


SEED = "SELECT string_agg(metric_name || '=' || value, ',' ORDER BY metric_name) FROM system_metrics"


def test_rows_go_and_ids_restart_between_tests(_fresh_postgres: FreshPostgres) -> None:
    fresh = _fresh_postgres
    fresh.prepare()
    fingerprint = _sql(fresh.url, FINGERPRINT)
    seed = _sql(fresh.url, SEED)
    assert seed  # the migrations' own rows (app/migrations 0002): kept, as upgrade wrote them
    assert _insert_business(fresh.url, "a") == 1
    assert _insert_business(fresh.url, "b") == 2
    _sql(fresh.url, "UPDATE system_metrics SET value = value + 7")
    _sql(fresh.url, "DELETE FROM system_metrics WHERE metric_name = "
                    "(SELECT min(metric_name) FROM system_metrics)")
    wipes, rebuilds = fresh.wipes, fresh.rebuilds
    fresh.prepare()
    assert (fresh.wipes, fresh.rebuilds) == (wipes + 1, rebuilds)  # emptied, not migrated again
    assert _sql(fresh.url, "SELECT count(*) FROM businesses") == 0
    assert _insert_business(fresh.url, "c") == 1  # as on a freshly migrated schema
    assert _sql(fresh.url, SEED) == seed
    assert _sql(fresh.url, FINGERPRINT) == fingerprint


def test_a_changed_schema_is_built_again_by_the_migrations(_fresh_postgres: FreshPostgres) -> None:
    fresh = _fresh_postgres
    fresh.prepare()
    fingerprint = _sql(fresh.url, FINGERPRINT)
    changes = ["ALTER TABLE businesses ADD COLUMN extra integer",
               "CREATE INDEX ix_extra ON businesses (name, id)",
               "ALTER TABLE businesses ALTER COLUMN name DROP NOT NULL",
               "CREATE TABLE stray (id integer)",
               "GRANT SELECT ON businesses TO PUBLIC",
               "UPDATE alembic_version SET version_num = '0001'"]
    for change in changes:
        _sql(fresh.url, change)
        assert _sql(fresh.url, FINGERPRINT) != fingerprint, change
        rebuilds = fresh.rebuilds
        fresh.prepare()
        assert fresh.rebuilds == rebuilds + 1, change
        assert _sql(fresh.url, FINGERPRINT) == fingerprint, change


def test_a_downgraded_schema_is_built_again(_fresh_postgres: FreshPostgres) -> None:
    fresh = _fresh_postgres
    fresh.prepare()
    fingerprint = _sql(fresh.url, FINGERPRINT)
    command.downgrade(alembic_config(fresh.url), "base")  # alembic_version is gone too
    rebuilds = fresh.rebuilds
    fresh.prepare()
    assert fresh.rebuilds == rebuilds + 1
    assert _sql(fresh.url, FINGERPRINT) == fingerprint
