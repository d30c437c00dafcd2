"""What a business or a key has spent and holds, read from the ledger (SQL sums, exact).

spent: the charges (completed jobs, by the server's count) since the start of the calendar
month, UTC. held: the open holds, whenever made: a hold whose job has no release entry yet
(settle and release_job each write one), so in-flight jobs. Both are positive USD.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.accounts.ledger import usd
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


def _open_hold() -> ColumnElement[bool]:
    release = aliased(LedgerEntry)
    return (LedgerEntry.kind == LedgerKind.hold) & ~exists().where(
        release.job_kind == LedgerEntry.job_kind, release.job_id == LedgerEntry.job_id,
        release.kind == LedgerKind.release)


async def _total(session: AsyncSession, *where: ColumnElement[bool]) -> Decimal:
    total = (await session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount_usd), Decimal(0))).where(*where)
    )).scalar_one()
    return usd(-Decimal(total))  # charges and holds are negative entries


async def business_spend(session: AsyncSession, business_id: int, now: datetime) -> Spend:
    mine = LedgerEntry.business_id == business_id
    return Spend(
        spent_usd=await _total(session, mine, LedgerEntry.kind == LedgerKind.charge,
                               LedgerEntry.created_at >= month_start(now)),
        held_usd=await _total(session, mine, _open_hold()))


async def key_spend(session: AsyncSession, key_ids: list[int], now: datetime
                    ) -> dict[int, Spend]:
    """Per key (every id asked for is in the answer, zero when it spent nothing)."""
    if not key_ids:
        return {}
    spent = dict((await session.execute(
        select(LedgerEntry.api_key_id, func.sum(LedgerEntry.amount_usd))
        .where(LedgerEntry.api_key_id.in_(key_ids), LedgerEntry.kind == LedgerKind.charge,
               LedgerEntry.created_at >= month_start(now))
        .group_by(LedgerEntry.api_key_id))).all())
    held = dict((await session.execute(
        select(LedgerEntry.api_key_id, func.sum(LedgerEntry.amount_usd))
        .where(LedgerEntry.api_key_id.in_(key_ids), _open_hold())
        .group_by(LedgerEntry.api_key_id))).all())
    return {k: Spend(spent_usd=usd(-Decimal(spent.get(k) or 0)),
                     held_usd=usd(-Decimal(held.get(k) or 0))) for k in key_ids}
