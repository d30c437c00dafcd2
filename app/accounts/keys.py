"""Keys under a business: the one place keys are made (create_key), and the old path that
names the business (POST /api-keys, `mia apikey`), which creates the business if it is new.
Checking, scoping and revoking keys is auth's (app/auth/apikeys.py)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.businesses import clean, create_business, refuse_removed
from app.auth.apikeys import parse_scopes
from app.auth.secrets import API_KEY_PREFIX, hash_secret, new_secret
from app.errors import Conflict
from app.models import ApiKey, Business


async def get_or_create_business(session: AsyncSession, name: str) -> Business:
    name = clean("name", name)  # as create_business stores it, so " acme" finds "acme"
    query = select(Business).where(Business.name == name)
    business = (await session.execute(query)).scalar()
    if business is None:
        try:
            business = await create_business(session, name)
        except Conflict as exc:
            # Committed by a concurrent request between the read above and create_business's
            # own check: that business is the one asked for.
            if exc.code != "business_exists":
                raise
            business = (await session.execute(query)).scalar_one()
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
