"""A business's ledger entries, newest first, a page at a time (keyset: ?before=<id>)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import LedgerEntry


async def entries(session: AsyncSession, business_id: int, *, before: int | None,
                  limit: int) -> tuple[list[LedgerEntry], int | None]:
    """Up to `limit` entries older than `before`, and the id to pass as `before` for the next
    page (None on the last). Ids grow with time, so id order is time order and a page never
    shifts when entries are appended meanwhile (ix_ledger_entries_business_id)."""
    query = (select(LedgerEntry).where(LedgerEntry.business_id == business_id)
             .order_by(LedgerEntry.id.desc()).limit(limit + 1))
    if before is not None:
        query = query.where(LedgerEntry.id < before)
    rows = list((await session.execute(query)).scalars().all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)
