"""Buyback records: claiming revenue, releasing it on failure, and what the API reads.

Services only flush; the request or job that opened the transaction commits. Every USD of
revenue goes to at most one buyback: a claim is one transaction that first takes the single
active slot (a UNIQUE column, so the database refuses a second active buyback) and then marks
the unallocated RevenueEvents with its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, ValidationFailed
from app.models import Buyback, BuybackStatus, BuybackTx, RevenueEvent, utcnow

ACTIVE_SLOT = 1
ZERO_USD = Decimal("0.000000")  # how the USD column reads zero back


class BuybackActive(Conflict):
    code = "buyback_active"


class NoRevenue(Conflict):
    code = "no_unallocated_revenue"


async def active_buyback(session: AsyncSession) -> Buyback | None:
    return (await session.execute(
        select(Buyback).where(Buyback.active_slot == ACTIVE_SLOT))).scalar_one_or_none()


async def unallocated_usd(session: AsyncSession) -> tuple[Decimal, int]:
    """(USD, events) no buyback has claimed. Summed in SQL over the USD column's own type."""
    total, n = (await session.execute(
        select(func.sum(RevenueEvent.amount_usd), func.count())
        .where(RevenueEvent.buyback_id.is_(None)))).one()
    return (ZERO_USD if total is None else Decimal(total)), int(n)


async def start_buyback(session: AsyncSession, triggered_by: str,
                        amount_usd: Decimal | None = None, *, now: datetime | None = None) -> Buyback:
    """Claim unallocated revenue for a new buyback (status planned), in the caller's transaction.

    With ``amount_usd``, only the oldest events whose running total stays <= amount_usd are
    claimed (events are never split). Raises BuybackActive (409) when one is already active,
    NoRevenue (409) when nothing is unallocated, ValidationFailed (422) when amount_usd is below
    the oldest unallocated event.
    """
    now = now or utcnow()
    bb = Buyback(status=BuybackStatus.planned, active_slot=ACTIVE_SLOT, usd_amount=Decimal(0),
                 triggered_by=triggered_by, created_at=now, updated_at=now)
    try:
        async with session.begin_nested():
            session.add(bb)
            await session.flush()
    except IntegrityError:
        # PostgreSQL: a concurrent claim held the unique slot; we waited for it to commit.
        other = await active_buyback(session)
        raise BuybackActive(
            f"a buyback is already active (id {other.id if other else '?'})",
            extra={"buyback_id": other.id if other else None}) from None
    claim = update(RevenueEvent).where(RevenueEvent.buyback_id.is_(None))
    if amount_usd is not None:
        ids = await _oldest_within(session, amount_usd)
        if not ids:
            if (await unallocated_usd(session))[1] == 0:
                raise NoRevenue("there is no unallocated revenue to buy back with")
            raise ValidationFailed(f"amount_usd {amount_usd} is below the oldest unallocated "
                                   "revenue event; events are never split",
                                   code="amount_too_small")
        claim = claim.where(RevenueEvent.id.in_(ids))
    result = await session.execute(claim.values(buyback_id=bb.id)
                                   .execution_options(synchronize_session=False))
    if result.rowcount == 0:
        raise NoRevenue("there is no unallocated revenue to buy back with")
    total = (await session.execute(select(func.sum(RevenueEvent.amount_usd))
                                   .where(RevenueEvent.buyback_id == bb.id))).scalar_one()
    bb.usd_amount = Decimal(total)
    await session.flush()
    return bb


async def _oldest_within(session: AsyncSession, limit: Decimal) -> list[int]:
    # Running total in Python (exact Decimal); safe because we hold the active slot, so no
    # other claim runs until we commit.
    ids: list[int] = []
    running = Decimal(0)
    rows = await session.stream(select(RevenueEvent.id, RevenueEvent.amount_usd)
                                .where(RevenueEvent.buyback_id.is_(None))
                                .order_by(RevenueEvent.id))
    async for event_id, amount in rows:
        if running + Decimal(amount) > limit:
            break
        running += Decimal(amount)
        ids.append(event_id)
    await rows.close()
    return ids


async def release_revenue(session: AsyncSession, buyback_id: int) -> int:
    """Give a failed buyback's revenue back to the unallocated pool. Returns events released."""
    result = await session.execute(update(RevenueEvent).where(RevenueEvent.buyback_id == buyback_id)
                                   .values(buyback_id=None)
                                   .execution_options(synchronize_session=False))
    return int(result.rowcount)


async def get_buyback(session: AsyncSession, buyback_id: int) -> Buyback:
    bb = await session.get(Buyback, buyback_id)
    if bb is None:
        raise NotFound(f"no buyback {buyback_id}", code="buyback_not_found")
    return bb


async def txs_of(session: AsyncSession, buyback_ids: list[int]) -> dict[int, list[BuybackTx]]:
    out: dict[int, list[BuybackTx]] = {i: [] for i in buyback_ids}
    if not buyback_ids:
        return out
    rows = await session.execute(select(BuybackTx).where(BuybackTx.buyback_id.in_(buyback_ids))
                                 .order_by(BuybackTx.buyback_id, BuybackTx.seq))
    for tx in rows.scalars():
        out[tx.buyback_id].append(tx)
    return out


async def revenue_of(session: AsyncSession, buyback_id: int) -> tuple[Decimal, int]:
    total, n = (await session.execute(select(func.sum(RevenueEvent.amount_usd), func.count())
                                      .where(RevenueEvent.buyback_id == buyback_id))).one()
    return (ZERO_USD if total is None else Decimal(total)), int(n)


async def list_buybacks(session: AsyncSession, *, status: str | None = None, limit: int = 50,
                        offset: int = 0) -> tuple[list[Buyback], int]:
    q = select(Buyback)
    count = select(func.count()).select_from(Buyback)
    if status is not None:
        q = q.where(Buyback.status == status)
        count = count.where(Buyback.status == status)
    rows = await session.execute(q.order_by(Buyback.id.desc()).limit(limit).offset(offset))
    return list(rows.scalars()), int((await session.execute(count)).scalar_one())


def burned_usd_subquery():  # type: ignore[no-untyped-def]
    """USD of burned buybacks, for the seed's SystemMetrics row (an UPDATE ... SET = (SELECT))."""
    return (select(func.coalesce(func.sum(Buyback.usd_amount), 0))
            .where(Buyback.status == BuybackStatus.burned).scalar_subquery())


@dataclass(frozen=True)
class Totals:
    buybacks_burned: int
    total_buyback_usd: Decimal  # USD of burned buybacks
    total_serv_burned: int  # base units, per our records
    last_buyback_at: datetime | None
    active_buyback_id: int | None
    active_buyback_status: str | None


async def totals(session: AsyncSession) -> Totals:
    burned = BuybackStatus.burned
    usd, n, last = (await session.execute(
        select(func.sum(Buyback.usd_amount), func.count(), func.max(Buyback.completed_at))
        .where(Buyback.status == burned))).one()
    # TokenAmount is text: summed exactly in Python (one short column per burned buyback).
    amounts = (await session.execute(select(Buyback.serv_burned)
                                     .where(Buyback.status == burned))).scalars()
    active = await active_buyback(session)
    return Totals(
        buybacks_burned=int(n), total_buyback_usd=ZERO_USD if usd is None else Decimal(usd),
        total_serv_burned=sum(a or 0 for a in amounts),
        last_buyback_at=last,
        active_buyback_id=active.id if active else None,
        active_buyback_status=active.status if active else None)
