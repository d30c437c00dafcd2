"""Business API keys: shown once at creation, stored as SHA-256, scoped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principals import Client
from app.errors import BadRequest, Forbidden, Unauthorized
from app.models import ApiKey, Business

SCOPES = frozenset({"chat", "idle"})


def parse_scopes(scopes: Iterable[str] | str) -> frozenset[str]:
    items = scopes.split(",") if isinstance(scopes, str) else scopes
    wanted = frozenset(s.strip() for s in items if s.strip())
    unknown = wanted - SCOPES
    if unknown or not wanted:
        raise BadRequest(f"scopes must be a non-empty subset of {sorted(SCOPES)}",
                         code="invalid_scopes")
    return wanted


async def authenticate(session: AsyncSession, key_hash: str) -> Client:
    """The client a key (by its stored hash) stands for, scopes not yet checked."""
    found = (await authenticate_many(session, [key_hash]))[key_hash]
    if isinstance(found, Unauthorized):
        raise found
    return found


async def authenticate_many(session: AsyncSession,
                            key_hashes: list[str]) -> dict[str, Client | Unauthorized]:
    """authenticate() for several keys in one statement: each hash's client or refusal."""
    rows = {row.key_hash: row for row in await session.execute(
        select(ApiKey.key_hash, ApiKey.id, ApiKey.business_id, ApiKey.scopes, ApiKey.revoked_at)
        .where(ApiKey.key_hash.in_(key_hashes)))}
    out: dict[str, Client | Unauthorized] = {}
    for key_hash in key_hashes:
        row = rows.get(key_hash)
        if row is None:
            out[key_hash] = Unauthorized("unknown API key", code="invalid_api_key")
        elif row.revoked_at is not None:
            out[key_hash] = Unauthorized("this API key has been revoked", code="api_key_revoked")
        else:
            out[key_hash] = Client(business_id=row.business_id, api_key_id=row.id,
                                   scopes=frozenset(s for s in row.scopes.split(",") if s))
    return out


def require_scope(client: Client, scope: str) -> Client:
    if scope not in client.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope", code="insufficient_scope")
    return client


async def revoke(session: AsyncSession, key_id: int | None, now: datetime, *,
                 prefix: str | None = None) -> ApiKey | None:
    """Revoke by id (or by a prefix that names exactly one key). Idempotent: an already
    revoked key keeps its first revocation time. None if no such key."""
    if key_id is None:
        if not prefix:
            return None
        ids = (await session.execute(
            select(ApiKey.id).where(ApiKey.prefix == prefix).limit(2))).scalars().all()
        if len(ids) > 1:
            raise BadRequest("several keys share this prefix; revoke by id",
                             code="ambiguous_prefix")
        if not ids:
            return None
        key_id = ids[0]
    await session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                          .values(revoked_at=now).execution_options(synchronize_session=False))
    return (await session.execute(
        select(ApiKey).where(ApiKey.id == key_id).execution_options(populate_existing=True)
    )).scalar()


async def list_keys(session: AsyncSession) -> list[tuple[ApiKey, str]]:
    """Every key with its business name, newest first. Only hashes and prefixes are stored."""
    rows = await session.execute(
        select(ApiKey, Business.name).join(Business, Business.id == ApiKey.business_id)
        .order_by(ApiKey.id.desc()))
    return [(key, name) for key, name in rows]


async def business_keys(session: AsyncSession, business_id: int) -> list[ApiKey]:
    """A business's keys, newest first (revoked ones too, marked by revoked_at)."""
    return list((await session.execute(select(ApiKey).where(ApiKey.business_id == business_id)
                                       .order_by(ApiKey.id.desc()))).scalars().all())


async def set_monthly_limit(session: AsyncSession, business_id: int, key_id: int | None,
                            limit_usd: Decimal | None) -> ApiKey | None:
    """Set (None: remove) a key's monthly limit; None if the business has no such key."""
    if key_id is None:
        return None
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.business_id == business_id)
        .values(monthly_limit_usd=limit_usd).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    return (await session.execute(
        select(ApiKey).where(ApiKey.id == key_id).execution_options(populate_existing=True)
    )).scalar()
