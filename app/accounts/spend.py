"""What a business or a key has spent and holds, read from the ledger (SQL sums, exact).

spent: the charges (completed jobs, by the server's count) since the start of the calendar
month, UTC. held: the open holds, whenever made: a hold whose job has no release entry yet
(settle and release_job each write one), so in-flight jobs. Both are positive USD, each one
SQL aggregate over the business's (or key's) entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.ledger import ZERO, usd
from app.models import LedgerEntry, LedgerKind


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s calendar month, UTC."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 \
        else start.replace(month=start.month + 1)


@dataclass(frozen=True)
class Spend:
    spent_usd: Decimal  # charges this month
    held_usd: Decimal  # open holds


def _sums(since: datetime) -> tuple[Any, Any]:
    """(charges since `since`, open holds), both as negative sums of entries, in one scan.
    Open holds need no anti-join: a job's release gives back exactly its hold (settle and
    release_job both write -hold) and a job has at most one of each (uq_ledger_entries_job),
    so holds plus releases sum to minus what is still held."""
    kind, amount = LedgerEntry.kind, LedgerEntry.amount_usd
    charged = func.sum(case((and_(kind == LedgerKind.charge, LedgerEntry.created_at >= since),
                             amount), else_=Decimal(0)))
    held = func.sum(case((kind.in_((LedgerKind.hold, LedgerKind.release)), amount),
                         else_=Decimal(0)))
    return charged, held


def _spend(charged: Any, held: Any) -> Spend:
    return Spend(spent_usd=usd(-Decimal(charged or 0)), held_usd=usd(-Decimal(held or 0)))


async def business_spend(session: AsyncSession, business_id: int, now: datetime) -> Spend:
    charged, held = _sums(month_start(now))
    row = (await session.execute(select(charged, held).where(
        LedgerEntry.business_id == business_id))).one()
    return _spend(*row)


async def key_spend(session: AsyncSession, key_ids: list[int], now: datetime
                    ) -> dict[int, Spend]:
    """Per key (every id asked for is in the answer, zero when it spent nothing)."""
    if not key_ids:
        return {}
    charged, held = _sums(month_start(now))
    rows = (await session.execute(
        select(LedgerEntry.api_key_id, charged, held)
        .where(LedgerEntry.api_key_id.in_(key_ids)).group_by(LedgerEntry.api_key_id))).all()
    found = {key_id: _spend(c, h) for key_id, c, h in rows}
    return {k: found.get(k, Spend(ZERO, ZERO)) for k in key_ids}
