"""Business API keys: shown once at creation, stored as SHA-256, scoped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.businesses import clean, create_business, refuse_removed
from app.auth.principals import Client
from app.auth.secrets import API_KEY_PREFIX, hash_secret, new_secret
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


async def get_or_create_business(session: AsyncSession, name: str) -> Business:
    name = clean("name", name)  # as create_business stores it, so " acme" finds "acme"
    business = (await session.execute(select(Business).where(Business.name == name))).scalar()
    if business is None:
        business = await create_business(session, name)
    return business


async def create_key(session: AsyncSession, business: Business,
                     scopes: Iterable[str] | str = ("chat",), *,
                     monthly_limit_usd: Decimal | None = None) -> tuple[ApiKey, str]:
    """The one place keys are made. Returns the stored key and its plaintext, which exists only
    in this return value. A removed business gets no new key (409 business_removed)."""
    scope_set = parse_scopes(scopes)
    refuse_removed(business)
    plaintext = new_secret(API_KEY_PREFIX)
    key = ApiKey(business_id=business.id, prefix=plaintext[:10], key_hash=hash_secret(plaintext),
                 scopes=",".join(sorted(scope_set)), monthly_limit_usd=monthly_limit_usd)
    session.add(key)
    await session.flush()
    return key, plaintext


async def create_api_key(session: AsyncSession, business_name: str,
                         scopes: Iterable[str] | str = ("chat",)) -> tuple[ApiKey, str]:
    """A key for the business of that name, created (with a deposit reference) if new."""
    parse_scopes(scopes)  # before a business is created for a request that fails anyway
    business = await get_or_create_business(session, business_name)
    return await create_key(session, business, scopes)


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


async def issue_api_key(database_url: str, business_name: str, scopes: Iterable[str] | str) -> str:
    """Create a key in its own transaction on its own engine (for the CLI); returns the plaintext."""
    from app.db import Database

    db = Database(database_url)
    try:
        async with db.transaction() as session:
            _, plaintext = await create_api_key(session, business_name, scopes)
        return plaintext
    finally:
        await db.dispose()


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
