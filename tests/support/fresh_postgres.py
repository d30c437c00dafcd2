"""A freshly migrated PostgreSQL database before every test, without migrating before every test.

`alembic upgrade head` on a dropped schema costs 1-3 s on a loaded machine, and a few hundred
tests ask for PostgreSQL. The schema is built by the real migrations once (and again whenever a
test leaves it different); between tests the rows go, the rows the migrations themselves wrote
(the seed's system_metrics) come back as they wrote them, and every sequence is set back to where
the migrations left it: the state a fresh upgrade leaves, but for the time in those seed rows'
timestamps (when the schema was built, not when the test started; nothing reads them).

"Different" is decided by a fingerprint of everything a test could change in the schema: tables,
columns, defaults, constraints, indexes, sequences' definitions, functions, triggers, types,
policies, rules, privileges, owners, schemas, extensions and the alembic revision. A test that
downgrades, adds a table, grants to a role or alters a column leaves another fingerprint, and the
next test gets a schema rebuilt from the migrations exactly as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from app.migrate import upgrade

FINGERPRINT = r"""
SELECT md5(string_agg(x, E'\n' ORDER BY x)) FROM (
  SELECT format('rel %s %s %s %s %s', c.relname, c.relkind, c.relowner::regrole,
                c.relrowsecurity, coalesce(c.relacl::text, ''))
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('col %s.%s %s %s %s %s %s', c.relname, a.attname,
                format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated,
                a.attidentity, coalesce(pg_get_expr(d.adbin, d.adrelid), ''))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('con %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('idx %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL
  SELECT format('seq %s %s %s %s %s %s %s', sequencename, data_type, start_value,
                increment_by, min_value, max_value, cycle)
    FROM pg_sequences WHERE schemaname = 'public'
  UNION ALL
  SELECT format('fn %s %s', p.oid::regprocedure, md5(p.prosrc))
    FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('trg %s', pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT format('type %s %s', typname, typtype)
    FROM pg_type WHERE typnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('enum %s %s %s', enumtypid::regtype, enumsortorder, enumlabel) FROM pg_enum
  UNION ALL
  SELECT format('pol %s %s', polrelid::regclass, polname) FROM pg_policy
  UNION ALL
  SELECT format('rule %s', definition) FROM pg_rules WHERE schemaname = 'public'
  UNION ALL
  SELECT format('ns %s %s %s', nspname, nspowner::regrole, coalesce(nspacl::text, ''))
    FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
  UNION ALL
  SELECT format('ext %s %s', extname, extversion) FROM pg_extension
  UNION ALL
  SELECT format('defacl %s', defaclacl::text) FROM pg_default_acl
  UNION ALL
  SELECT format('rev %s', version_num) FROM public.alembic_version
) q(x)
"""

TABLES = ("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
          "AND tablename <> 'alembic_version' ORDER BY tablename")
SEQUENCES = "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class FreshPostgres:
    """`prepare()` before each test: afterwards `url` holds the schema and the rows of `alembic
    upgrade head`. `rebuilds` and `wipes` count which way each test got there."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fingerprint: str | None = None  # of the schema as the migrations built it
        self._tables: list[str] = []
        self._seeds: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}  # table: columns, rows
        self._sequences: list[tuple[str, int, bool]] = []  # name, last_value, is_called
        self.rebuilds = 0
        self.wipes = 0

    def prepare(self) -> None:
        if self._fingerprint is not None and asyncio.run(self._wipe_if_unchanged()):
            self.wipes += 1
            return
        self.rebuild()

    def rebuild(self) -> None:
        """Drop the schema and run every migration: what tests of the migrations themselves use."""
        asyncio.run(self._drop_schema())
        upgrade(self.url)  # blocking, outside any event loop
        self.rebuilds += 1
        self._fingerprint = asyncio.run(self._read_fresh_state())

    async def _drop_schema(self) -> None:
        conn = await asyncpg.connect(_dsn(self.url))
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    async def _read_fresh_state(self) -> str:
        """The fingerprint to compare with; and the rows and sequence positions to restore."""
        conn = await asyncpg.connect(_dsn(self.url))
        try:
            self._tables = [r[0] for r in await conn.fetch(TABLES)]
            self._seeds = {}
            for table in self._tables:
                rows = await conn.fetch(f"SELECT * FROM {_quote(table)}")
                if rows:
                    self._seeds[table] = (list(rows[0].keys()), [tuple(r) for r in rows])
            self._sequences = []
            for (seq,) in await conn.fetch(SEQUENCES):
                row = await conn.fetchrow(f"SELECT last_value, is_called FROM {_quote(seq)}")
                self._sequences.append((seq, row["last_value"], row["is_called"]))
            return str(await conn.fetchval(FINGERPRINT))
        finally:
            await conn.close()

    async def _wipe_if_unchanged(self) -> bool:
        conn = await asyncpg.connect(_dsn(self.url))
        try:
            try:
                if await conn.fetchval(FINGERPRINT) != self._fingerprint:
                    return False
            except asyncpg.PostgresError:  # e.g. no alembic_version: a test dropped it
                return False
            try:
                async with conn.transaction():
                    # foreign keys are triggers: off for this transaction, so that the order of
                    # the deletes does not matter (every table is emptied)
                    await conn.execute("SET LOCAL session_replication_role = replica")
                    for table in self._tables:
                        await conn.execute(f"DELETE FROM {_quote(table)}")
                    for table, (columns, rows) in self._seeds.items():
                        await conn.copy_records_to_table(table, records=rows, columns=columns)
                    for seq, last_value, is_called in self._sequences:
                        await conn.execute("SELECT setval($1::regclass, $2, $3)",
                                           _quote(seq), last_value, is_called)
            except asyncpg.PostgresError:  # e.g. not a superuser: rebuild instead
                return False
            return True
        finally:
            await conn.close()
