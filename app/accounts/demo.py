"""`mia dev`'s demo business: funded by an operator credit, so priced jobs run from the start."""

from __future__ import annotations

from decimal import Decimal

from app.accounts.credits import credit_business
from app.db import Database

DEMO_BUSINESS = "Demo Business"
DEMO_CREDIT_USD = Decimal("25.00")
DEMO_REFERENCE = "dev-seed"  # the credit's reference: a restart on the same database credits once


async def seed_demo_business(database_url: str, scopes: str = "chat,idle") -> tuple[str, Decimal]:
    """The demo business (created if new), credited once, and a new key for it. Returns the
    key's plaintext and the business's balance (USD)."""
    from app.accounts.keys import create_key, get_or_create_business

    db = Database(database_url)
    try:
        async with db.transaction() as session:
            business = await get_or_create_business(session, DEMO_BUSINESS)
            _, plaintext = await create_key(session, business, scopes)
        done = await credit_business(db, business.id, DEMO_CREDIT_USD, reference=DEMO_REFERENCE,
                                     actor="mia dev", note="demo funds (mia dev)")
        return plaintext, done.balance_usd
    finally:
        await db.dispose()
