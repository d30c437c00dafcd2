"""The treasury's one repository: every query on buybacks, their transactions and events, the
revenue ledger's claims, carry-overs and releases, the operator switches and price observations.

Functions take the caller's session and only flush; the request or job that opened the
transaction commits. Every USD of revenue goes to at most one buyback: a claim is one
transaction that first takes the single active slot (a UNIQUE column, so the database refuses a
second active buyback) and then marks the unallocated RevenueEvents with its id. Every state
change of a buyback is one conditional UPDATE from the state the caller expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, ValidationFailed
from app.models import (ACTIVE_BUYBACK_STATUSES, CARRYOVER_SOURCE, Buyback, BuybackEvent,
                        BuybackStatus, BuybackTx, Deposit, PriceObservation, RevenueEvent,
                        TreasuryControl, utcnow)

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
    """(USD, events) no buyback has claimed, carry-overs included: THE unallocated-revenue query
    (the threshold check, the dry run, /metrics and /burns/summary all use it). Summed in SQL
    over the USD column's own type."""
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
    """USD swapped by burned buybacks, for the seed's SystemMetrics row (UPDATE ... SET =
    (SELECT))."""
    return (select(func.coalesce(func.sum(Buyback.usd_swapped), 0))
            .where(Buyback.status == BuybackStatus.burned).scalar_subquery())


@dataclass(frozen=True)
class Totals:
    buybacks_burned: int
    total_buyback_usd: Decimal  # USD swapped by burned buybacks
    total_serv_burned: int  # base units, per our records
    last_buyback_at: datetime | None
    active_buyback_id: int | None


async def totals(session: AsyncSession) -> Totals:
    burned = BuybackStatus.burned
    usd, n, last = (await session.execute(
        select(func.sum(Buyback.usd_swapped), func.count(), func.max(Buyback.completed_at))
        .where(Buyback.status == burned))).one()
    # TokenAmount is text: summed exactly in Python (one short column per burned buyback).
    amounts = (await session.execute(select(Buyback.serv_burned)
                                     .where(Buyback.status == burned))).scalars()
    active = await active_buyback(session)
    return Totals(
        buybacks_burned=int(n), total_buyback_usd=ZERO_USD if usd is None else Decimal(usd),
        total_serv_burned=sum(a or 0 for a in amounts),
        last_buyback_at=last,
        active_buyback_id=active.id if active else None)


@dataclass(frozen=True)
class DepositTotals:
    """Stablecoin deposits credited to businesses (app/accounts/deposits.py): the other way USD
    comes into the treasury, shown beside what buybacks spent."""

    credited: int
    credited_usd: Decimal


async def deposit_totals(session: AsyncSession) -> DepositTotals:
    usd, n = (await session.execute(select(func.sum(Deposit.amount_usd), func.count())
                                    .where(Deposit.status == "credited"))).one()
    return DepositTotals(credited=int(n), credited_usd=ZERO_USD if usd is None else Decimal(usd))


@dataclass(frozen=True)
class BurnRecords:
    """What /burns/summary compares with the chain's Transfer logs, besides Totals."""

    first_block: int | None  # the lowest block any recorded treasury transaction was mined in
    in_flight: int  # base units: the active buyback's mined burn, not yet final (not yet burned)


async def burn_records(session: AsyncSession) -> BurnRecords:
    first = (await session.execute(select(func.min(BuybackTx.block_number)))).scalar_one()
    amounts = (await session.execute(
        select(BuybackTx.amount_out).join(Buyback, Buyback.id == BuybackTx.buyback_id)
        .where(Buyback.active_slot == ACTIVE_SLOT, BuybackTx.kind == "burn",
               BuybackTx.status == "mined"))).scalars()
    return BurnRecords(first_block=None if first is None else int(first),
                       in_flight=sum(int(a or 0) for a in amounts))


# --- the runner's writes -------------------------------------------------------------------------

class StateChanged(Exception):
    """A conditional update found the buyback no longer in the expected state."""


async def advance(session: AsyncSession, buyback_id: int, expected: str, **values: Any) -> None:
    """Only from ``expected``, so two runs can never both advance; raises StateChanged."""
    done = await session.execute(
        update(Buyback).where(Buyback.id == buyback_id, Buyback.status == expected)
        .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise StateChanged(f"buyback {buyback_id} left status {expected} under us")


async def lock_buyback(session: AsyncSession, buyback_id: int) -> None:
    """Row-lock the buyback (an UPDATE: a row lock on PostgreSQL, the write lock on SQLite) so
    two runners' checks and inserts are serialized."""
    await session.execute(update(Buyback).where(Buyback.id == buyback_id)
                          .values(updated_at=utcnow())
                          .execution_options(synchronize_session=False))


async def add_tx(session: AsyncSession, buyback_id: int, **values: Any) -> BuybackTx:
    seq = (await session.execute(select(func.count()).where(
        BuybackTx.buyback_id == buyback_id))).scalar_one() + 1
    row = BuybackTx(buyback_id=buyback_id, seq=seq, status="prepared", created_at=utcnow(),
                    **values)
    session.add(row)
    await session.flush()
    return row


async def tx_by_hash(session: AsyncSession, tx_hash: str) -> BuybackTx:
    return (await session.execute(select(BuybackTx).where(
        BuybackTx.tx_hash == tx_hash.lower()))).scalar_one()


async def record_outcome(session: AsyncSession, row: BuybackTx, status: str,
                         amount_out: int | None, block_number: int, gas_used: int,
                         block_hash: str | None = None) -> None:
    """``row`` was mined (or reverted) at ``block_number``; its other same-nonce rows are
    superseded (unless a reorg brings them back: see unmine)."""
    await session.execute(
        update(BuybackTx).where(BuybackTx.id == row.id).values(
            status=status, amount_out=amount_out, block_number=block_number, gas_used=gas_used,
            block_hash=block_hash, mined_at=utcnow()).execution_options(synchronize_session=False))
    await session.execute(
        update(BuybackTx).where(BuybackTx.buyback_id == row.buyback_id,
                                BuybackTx.nonce == row.nonce, BuybackTx.id != row.id,
                                BuybackTx.status == "prepared")
        .values(status="superseded").execution_options(synchronize_session=False))


async def unmine(session: AsyncSession, row: BuybackTx) -> None:
    """A reorg took ``row``'s block away: it is in flight again (its stored bytes can be
    re-broadcast), and so are the same-nonce rows it had superseded."""
    await session.execute(
        update(BuybackTx).where(BuybackTx.buyback_id == row.buyback_id,
                                BuybackTx.nonce == row.nonce)
        .values(status="prepared", amount_out=None, block_number=None, block_hash=None,
                gas_used=None, mined_at=None).execution_options(synchronize_session=False))


async def outstanding_signed(session: AsyncSession, from_nonce: int) -> list[str]:
    """The stored signed bytes (0x-hex) of every buyback's transactions with nonce >=
    ``from_nonce`` that may still be mined (chain.tx.Outstanding), in nonce order; per nonce
    the one to re-broadcast comes last: the recorded mined/reverted one, else the latest
    signed (the highest fee). Superseded rows are left out: another one with their nonce was
    mined. Any buyback's, not only the active one's: the treasury is one nonce sequence."""
    rows = (await session.execute(
        select(BuybackTx.nonce, BuybackTx.status, BuybackTx.seq, BuybackTx.raw_tx)
        .where(BuybackTx.nonce >= from_nonce, BuybackTx.status != "superseded"))).all()
    outcome = {"prepared": 0, "reverted": 1, "mined": 1}
    rows.sort(key=lambda r: (r.nonce, outcome.get(r.status, 0), r.seq))
    return [r.raw_tx for r in rows]


async def supersede(session: AsyncSession, row: BuybackTx) -> None:
    """``row`` can never be mined: its nonce was used, final, by another transaction."""
    await session.execute(update(BuybackTx).where(BuybackTx.id == row.id, BuybackTx.status ==
                                                  "prepared").values(status="superseded")
                          .execution_options(synchronize_session=False))


async def fail_and_release(session: AsyncSession, buyback_id: int, expected: str, reason: str,
                           status: str = BuybackStatus.failed) -> int:
    """Failed (or cancelled), no longer active, nothing swapped, and its revenue unallocated
    again. Returns the events released."""
    now = utcnow()
    await advance(session, buyback_id, expected, status=status, active_slot=None,
                  failure_reason=reason[:1000], usd_swapped=Decimal(0), completed_at=now)
    return await release_revenue(session, buyback_id)


async def carry_over(session: AsyncSession, bb: Buyback, usd_swapped: Decimal) -> Decimal:
    """What ``bb`` claimed but did not swap goes back to unallocated as ONE ledger entry (a
    carry-over event, unique per buyback); the claimed events stay with ``bb``. Returns it."""
    unspent = Decimal(bb.usd_amount) - usd_swapped
    if unspent > 0:
        session.add(RevenueEvent(idle_job_id=None, amount_usd=unspent, source=CARRYOVER_SOURCE,
                                 output_tokens=0, created_at=utcnow(),
                                 carried_from_buyback_id=bb.id))
        await session.flush()
    return unspent if unspent > 0 else ZERO_USD


async def add_event(session: AsyncSession, buyback_id: int, kind: str, detail: str) -> None:
    session.add(BuybackEvent(buyback_id=buyback_id, kind=kind, detail=detail[:1000],
                             created_at=utcnow()))
    await session.flush()


async def events_of(session: AsyncSession,
                    buyback_ids: list[int]) -> dict[int, list[BuybackEvent]]:
    out: dict[int, list[BuybackEvent]] = {i: [] for i in buyback_ids}
    if buyback_ids:
        rows = await session.execute(select(BuybackEvent).where(
            BuybackEvent.buyback_id.in_(buyback_ids)).order_by(BuybackEvent.id))
        for e in rows.scalars():
            out[e.buyback_id].append(e)
    return out


# --- operator switches -----------------------------------------------------------------------

async def control(session: AsyncSession) -> TreasuryControl:
    row = await session.get(TreasuryControl, 1)
    return row if row is not None else TreasuryControl(id=1, paused=False, updated_at=utcnow())


async def set_paused(session: AsyncSession, paused: bool, by: str, reason: str | None) -> None:
    row = await session.get(TreasuryControl, 1)
    if row is None:
        row = TreasuryControl(id=1)
        session.add(row)
    row.paused, row.changed_by, row.reason, row.updated_at = paused, by, reason, utcnow()
    await session.flush()


# --- reconciliation --------------------------------------------------------------------------

@dataclass(frozen=True)
class Ledger:
    """revenue = swapped + unallocated + in_flight, to the micro-dollar (USD)."""

    revenue: Decimal  # every idle job's revenue (carry-overs are not new revenue)
    swapped: Decimal  # stablecoin spent by finished buybacks
    unallocated: Decimal  # claimable now, carry-overs included
    in_flight: Decimal  # claimed by the active buyback

    @property
    def reconciled(self) -> bool:
        return self.revenue == self.swapped + self.unallocated + self.in_flight


async def ledger(session: AsyncSession) -> Ledger:
    def usd(v: object) -> Decimal:
        return ZERO_USD if v is None else Decimal(v)  # type: ignore[arg-type]

    revenue = (await session.execute(select(func.sum(RevenueEvent.amount_usd)).where(
        RevenueEvent.carried_from_buyback_id.is_(None)))).scalar_one()
    swapped = (await session.execute(select(func.sum(Buyback.usd_swapped)).where(
        Buyback.status.not_in(ACTIVE_BUYBACK_STATUSES)))).scalar_one()
    in_flight = (await session.execute(select(func.sum(Buyback.usd_amount)).where(
        Buyback.status.in_(ACTIVE_BUYBACK_STATUSES)))).scalar_one()
    unallocated, _ = await unallocated_usd(session)
    return Ledger(revenue=usd(revenue), swapped=usd(swapped), unallocated=unallocated,
                  in_flight=usd(in_flight))


# --- price observations (TWAP) ---------------------------------------------------------------

async def add_observation(session: AsyncSession, pair: str, block_number: int, timestamp: int,
                          price0_cumulative: int, price1_cumulative: int, keep_s: int) -> None:
    """Store one observation and forget those older than ``keep_s`` seconds before it."""
    await session.execute(delete(PriceObservation).where(
        PriceObservation.pair == pair, PriceObservation.timestamp < timestamp - keep_s))
    session.add(PriceObservation(pair=pair, block_number=block_number, timestamp=timestamp,
                                 price0_cumulative=price0_cumulative,
                                 price1_cumulative=price1_cumulative, created_at=utcnow()))
    await session.flush()


async def observation_before(session: AsyncSession, pair: str, at_most: int,
                             at_least: int) -> PriceObservation | None:
    """The newest observation of ``pair`` with at_least <= timestamp <= at_most (unix s)."""
    return (await session.execute(select(PriceObservation).where(
        PriceObservation.pair == pair, PriceObservation.timestamp <= at_most,
        PriceObservation.timestamp >= at_least)
        .order_by(PriceObservation.timestamp.desc()).limit(1))).scalar_one_or_none()
