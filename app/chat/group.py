"""Group commit of chat submissions on PostgreSQL: the submissions of concurrent `POST /chat`
(and `/v1/chat/completions`) requests in one API process are written by ONE multi-row statement
(pg.SUBMIT_MANY), and each request still gets its own outcome.

How a group forms (no timer at low load): a submission with no statement of this process in
flight goes at once, alone. Submissions that arrive while one is in flight queue, and go
together as soon as it returns (at most CHAT_SUBMIT_GROUP_MAX rows a statement); with
CHAT_SUBMIT_GROUP_WINDOW_MS > 0 a group whose first row arrived within that window of the
previous statement also waits that long for more. A lone request never waits for company.

One bad row never fails the others: if the group's statement raises a database error, each row
is written again on its own (pg.submit) and gets its own answer, error included.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from app.chat import pg
from app.db import Database, PgUnit, run_effects


@dataclass(frozen=True)
class Row:
    """One submission: what pg.submit takes."""
    job_id: str
    business_id: int | None
    session_id: str
    may_claim: bool
    prompt: str
    context: str | None
    now: datetime
    model: str | None = None
    options: str | None = None
    api_key_id: int | None = None


@dataclass
class Stats:
    """What grouping did in this process: statements run and rows they carried (tests and
    bench read it; a statement of one row is a submission that found no company)."""
    statements: int = 0
    rows: int = 0
    largest: int = 0
    alone: int = 0  # rows written on their own after their group's statement failed
    sizes: dict[int, int] = field(default_factory=dict)  # rows per statement -> statements


class Group:
    def __init__(self, db: Database, most: int, window_s: float):
        self.db = db
        self.most = max(1, most)
        self.window_s = max(0.0, window_s)
        self.stats = Stats()
        self._pending: list[tuple[Row, asyncio.Future[bool]]] = []
        self._flushing = False
        self._last_flush = 0.0  # monotonic: when the previous statement returned

    async def submit(self, row: Row) -> bool:
        """Whether the job was written (pg.submit's answer for this row)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if not self._flushing:
            self._flushing = True
            asyncio.create_task(self._drain(), name="mia-chat-submit-group")
        return await future

    async def _drain(self) -> None:
        """Statement after statement while submissions are waiting; one in flight at a time."""
        try:
            while self._pending:
                if (self.window_s and len(self._pending) < self.most
                        and time.monotonic() - self._last_flush < self.window_s):
                    await asyncio.sleep(self.window_s)  # company is arriving: let it gather
                batch, self._pending = self._pending[:self.most], self._pending[self.most:]
                await self._write([(r, f) for r, f in batch if not f.done()])
                self._last_flush = time.monotonic()
        finally:
            self._flushing = False
            if self._pending:  # arrived after the loop's last look (never in practice)
                self._flushing = True
                asyncio.create_task(self._drain(), name="mia-chat-submit-group")

    async def _write(self, batch: list[tuple[Row, asyncio.Future[bool]]]) -> None:
        if not batch:
            return
        rows = [r for r, _ in batch]
        try:
            async with self.db.fast_reads() as conn:
                if len(rows) == 1:
                    written = [await _one(conn, rows[0])]
                else:
                    try:
                        written = await pg.submit_many(conn, rows)
                    except asyncpg.PostgresError:
                        if conn.is_closed():
                            raise
                        written = await self._alone(conn, batch)
                        if written is None:
                            return
            self._count(len(rows))
        except Exception as exc:  # the pool or the server: every row of the group hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): so are the requests waiting on it
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), ok in zip(batch, written, strict=True):
            if not future.done():
                future.set_result(ok)

    async def _alone(self, conn: asyncpg.Connection,
                     batch: list[tuple[Row, asyncio.Future[bool]]]) -> None:
        """The group's statement failed: each row on its own, each with its own outcome."""
        for row, future in batch:
            try:
                ok = await _one(conn, row)
            except asyncpg.PostgresError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            finally:
                self.stats.alone += 1
            if not future.done():
                future.set_result(ok)
        return None

    def _count(self, n: int) -> None:
        s = self.stats
        s.statements += 1
        s.rows += n
        s.largest = max(s.largest, n)
        s.sizes[n] = s.sizes.get(n, 0) + 1


async def _one(conn: asyncpg.Connection, r: Row) -> bool:
    return await pg.submit(conn, job_id=r.job_id, business_id=r.business_id,
                           session_id=r.session_id, may_claim=r.may_claim, prompt=r.prompt,
                           context=r.context, now=r.now, model=r.model, options=r.options,
                           api_key_id=r.api_key_id)


_GROUPS: weakref.WeakKeyDictionary[Database, Group] = weakref.WeakKeyDictionary()


def of(db: Database, most: int, window_ms: float) -> Group:
    """This process's group for the database (one per open Database)."""
    group = _GROUPS.get(db)
    if group is None:
        group = _GROUPS[db] = Group(db, most, window_ms / 1000)
    return group


@asynccontextmanager
async def unit() -> AsyncIterator[PgUnit]:
    """A hot-path unit with no connection of its own: chat/service.submit sends its one
    statement through the group (which commits it), then what after_commit() registered runs."""
    u = PgUnit(None)
    yield u
    await run_effects(u)
