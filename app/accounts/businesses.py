"""Businesses: the accounts that hold a balance, API keys and a deposit reference.

One function creates a business (`create_business`), so every way in (POST /businesses,
`mia business create`, the older POST /api-keys {business}) gives it a deposit reference.
Names are unique (409 business_exists); a removed business is kept, shown with removed_at,
and changes no more (409 business_removed). Functions here only flush.
"""

from __future__ import annotations

import re
import secrets
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, ValidationFailed
from app.models import Business, USD_PLACES

NAME_MAX = 200
# Deliberately plain: one @, no spaces, a dot in the domain. Deliverability is the operator's
# to check; this only keeps typos and junk out.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_PHONE = re.compile(r"\+?[0-9][0-9 ().\-/]{3,30}")
RETENTION_MAX_DAYS = 36_500
LOW_BALANCE_MAX = Decimal("1000000000")
EDITABLE = ("name", "contact_email", "contact_phone", "retention_days", "low_balance_usd")


def new_deposit_ref() -> str:
    """16 hex characters (8 random bytes): what a deposit appends to its transfer's calldata."""
    return secrets.token_hex(8)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", extra={"fields": [{"field": field,
                                                                       "message": message}]})


def clean(field: str, value: Any) -> Any:
    """A field's value as stored, or 422 validation_error naming the field."""
    if field == "name":
        name = value.strip() if isinstance(value, str) else ""
        if not name or len(name) > NAME_MAX or not name.isprintable():
            raise _invalid(field, f"1 to {NAME_MAX} printable characters")
        return name
    if value is None:  # contacts, retention and threshold may be cleared
        return None
    if field == "contact_email":
        if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value):
            raise _invalid(field, "not an email address")
        return value
    if field == "contact_phone":
        digits = sum(c.isdigit() for c in value) if isinstance(value, str) else 0
        if not isinstance(value, str) or not _PHONE.fullmatch(value) or not 5 <= digits <= 20:
            raise _invalid(field, "a phone number: digits, spaces, ()-./ and a leading +")
        return value
    if field == "retention_days":
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 0 <= value <= RETENTION_MAX_DAYS:
            raise _invalid(field, f"whole days from 0 (kept) to {RETENTION_MAX_DAYS}, or null")
        return value
    if field == "low_balance_usd":
        if not isinstance(value, Decimal) or not value.is_finite() or value < 0 \
                or value > LOW_BALANCE_MAX or value != value.quantize(USD_PLACES):
            raise _invalid(field, "USD from 0 with at most six decimals, or null")
        return value
    raise KeyError(field)


async def _name_taken(session: AsyncSession, name: str, but: int | None = None) -> bool:
    query = select(Business.id).where(Business.name == name)
    if but is not None:
        query = query.where(Business.id != but)
    return (await session.execute(query)).first() is not None


def _exists(name: str) -> Conflict:
    return Conflict(f"a business named {name!r} exists", code="business_exists")


async def create_business(session: AsyncSession, name: str, *, contact_email: str | None = None,
                          contact_phone: str | None = None, retention_days: int | None = None,
                          low_balance_usd: Decimal | None = None) -> Business:
    """A new business with a fresh deposit reference. 409 business_exists for a taken name; two
    concurrent creations meet the unique index (IntegrityError at flush: the caller retries)."""
    values = {f: clean(f, v) for f, v in (("name", name), ("contact_email", contact_email),
                                          ("contact_phone", contact_phone),
                                          ("retention_days", retention_days),
                                          ("low_balance_usd", low_balance_usd))}
    if await _name_taken(session, values["name"]):
        raise _exists(values["name"])
    business = Business(**values, balance_usd=Decimal(0), deposit_ref=new_deposit_ref())
    session.add(business)
    await session.flush()
    return business


async def get_business(session: AsyncSession, business_id: int | None) -> Business:
    business = None if business_id is None else await session.get(Business, business_id)
    if business is None:
        raise NotFound("no such business", code="business_not_found")
    return business


def refuse_removed(business: Business) -> None:
    if business.removed_at is not None:
        raise Conflict(f"business {business.id} was removed on "
                       f"{business.removed_at:%Y-%m-%d}; it changes no more",
                       code="business_removed")


async def update_business(session: AsyncSession, business_id: int | None,
                          changes: dict[str, Any]) -> Business:
    """Apply the given fields (None clears a contact, the threshold, or the retention override)."""
    business = await get_business(session, business_id)
    refuse_removed(business)
    values = {f: clean(f, v) for f, v in changes.items() if f in EDITABLE}
    if "name" in values and await _name_taken(session, values["name"], but=business.id):
        raise _exists(values["name"])
    for field, value in values.items():
        setattr(business, field, value)
    await session.flush()
    return business


async def list_businesses(session: AsyncSession, *, before: int | None,
                          limit: int) -> list[Business]:
    """Newest first; `before` is the id the previous page ended at (keyset pagination)."""
    query = select(Business).order_by(Business.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Business.id < before)
    return list((await session.execute(query)).scalars().all())
