"""The Idempotency-Key header on the requests that create a job (POST /chat,
POST /v1/chat/completions, POST /idle-job), after Stripe's:

- A business sends `Idempotency-Key: <key>` (1 to 255 characters: letters, digits and
  `-_.:~+/=`; a UUID does). Keys belong to the business: another business's same key is
  another key. Anonymous requests cannot send one (nothing would tell two callers apart).
- The first request with a key writes its job and the key, with a hash of what was asked
  (the endpoint and the validated body), in ONE transaction: the key exists exactly when the
  job does, in the database, so losing Redis loses no key.
- A later request with the same key and the same request creates nothing: it gets that job
  (its state now, or, if it waits, its outcome), with `Idempotent-Replayed: true`. With another
  request it is 409 `idempotency_key_reused`.
- Concurrent requests with one key create one job: the key's row (PRIMARY KEY (business_id,
  key)) admits one transaction; the others wait at its INSERT and then replay that job.
- A request that created nothing (an error, or a job withdrawn because the queue was down)
  leaves no key: retrying it with the same key tries again.
- Keys are remembered IDEMPOTENCY_KEY_TTL_S (24 h): an older key is a new key, and the worker
  deletes old ones hourly (prune()).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from app.auth.principals import Client
from app.db import Database, Unit
from app.errors import BadRequest, Conflict
from app.models import IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
REPLAYED = {"Idempotent-Replayed": "true"}  # on the answer of a replayed request
MAX_LENGTH = 255
_KEY = re.compile(r"[A-Za-z0-9\-_.:~+/=]{1,%d}" % MAX_LENGTH)

# The header as an OpenAPI parameter, for the endpoints that take it (app/web.py Endpoint.headers)
PARAMETER: dict[str, Any] = {
    "name": HEADER, "in": "header", "required": False,
    "description": "Makes a retry safe: the same key with the same request returns the job the "
                   "first request created (header Idempotent-Replayed: true) instead of a new "
                   "one; with another request, 409 idempotency_key_reused. Keys belong to the "
                   "business and are kept IDEMPOTENCY_KEY_TTL_S (24 h).",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH,
               "pattern": r"^[A-Za-z0-9\-_.:~+/=]+$"}}


@dataclass(frozen=True)
class Key:
    business_id: int
    key: str
    request_hash: str  # sha256 hex of the endpoint and the validated body


@dataclass(frozen=True)
class Replay:
    """This request repeats an earlier one: the job it created."""
    job_id: str


class _Job(Protocol):
    id: Any


J = TypeVar("J", bound=_Job)


def key_of(request: Request, who: Client, body: BaseModel) -> Key | None:
    """The request's Idempotency-Key, checked (400 if malformed), or None without one."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not _KEY.fullmatch(raw):
        raise BadRequest(f"{HEADER} must be 1 to {MAX_LENGTH} characters: letters, digits and "
                         "-_.:~+/= (a UUID will do)", code="invalid_idempotency_key")
    if who.business_id is None:
        raise BadRequest(f"{HEADER} needs an API key: anonymous requests cannot be told apart",
                         code="invalid_idempotency_key")
    asked = orjson.dumps([request.method, request.url.path, body.model_dump(mode="json")],
                         option=orjson.OPT_SORT_KEYS)
    return Key(who.business_id, raw, hashlib.sha256(asked).hexdigest())


async def once(db: Database, key: Key | None, ttl_s: int,
               create: Callable[[Unit], Awaitable[J]],
               unit: Callable[[], AbstractAsyncContextManager[Unit]] | None = None) -> J | Replay:
    """Run `create` (it writes a job in the unit it is given and returns it) in one transaction.
    Without a key: in `unit()` (the caller's choice, e.g. the PostgreSQL hot path), or a
    transaction. With one: the key is written with the job, or, if a request with it came first,
    nothing is created and the answer is Replay(its job id)."""
    if key is None:
        async with (unit or db.transaction)() as u:
            return await create(u)
    async with db.transaction() as session:
        replay = await _claim(session, key, utcnow(), ttl_s)
        if replay is not None:
            return replay
        job = await create(session)
        await session.execute(IdempotencyKey.__table__.update().where(
            IdempotencyKey.business_id == key.business_id, IdempotencyKey.key == key.key)
            .values(job_id=str(job.id)))
    return job


async def _claim(session: AsyncSession, key: Key, now: datetime, ttl_s: int) -> Replay | None:
    """Write the key (or take over an expired one); if a live one is there, what it says. On
    PostgreSQL the INSERT waits for a concurrent transaction holding the same key to end; SQLite
    runs one writer at a time."""
    table = IdempotencyKey.__table__
    insert_for = sqlite_insert if session.bind.dialect.name == "sqlite" else pg_insert
    stmt = insert_for(table).values(business_id=key.business_id, key=key.key,
                                    request_hash=key.request_hash, job_id=None, created_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.business_id, table.c.key],
        set_=dict(request_hash=stmt.excluded.request_hash, job_id=None,
                  created_at=stmt.excluded.created_at),
        where=table.c.created_at <= now - timedelta(seconds=ttl_s)).returning(table.c.key)
    for _ in range(2):
        if (await session.execute(stmt)).first() is not None:
            return None
        row = (await session.execute(
            select(IdempotencyKey.request_hash, IdempotencyKey.job_id).where(
                IdempotencyKey.business_id == key.business_id,
                IdempotencyKey.key == key.key))).first()
        if row is None:  # deleted since (pruned, or its job withdrawn): claim it again
            continue
        if row.request_hash != key.request_hash or row.job_id is None:
            raise Conflict(f"this {HEADER} was used with another request; use a new key for a "
                           "new request", code="idempotency_key_reused")
        return Replay(row.job_id)
    raise Conflict(f"this {HEADER} is being used by another request right now; retry",
                   code="idempotency_key_busy")


async def forget_job(session: AsyncSession, job_id: str) -> None:
    """The job was taken back (never queued): a retry with its key creates it anew."""
    await session.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id == job_id))


async def prune(session: AsyncSession, ttl_s: int, now: datetime | None = None) -> int:
    """Delete the keys older than ttl_s; how many."""
    cutoff = (now or utcnow()) - timedelta(seconds=ttl_s)
    result = await session.execute(delete(IdempotencyKey).where(
        IdempotencyKey.created_at <= cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
