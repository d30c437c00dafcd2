"""The ledger: every change of a business's balance is one appended LedgerEntry, and the balance
is their sum. `Business.balance_usd` holds that sum, moved by the same transaction that appends
the entry, with one conditional UPDATE: a hold that would take it below zero changes nothing
and is refused, so concurrent submissions against one balance serialize on the business's row
(PostgreSQL's row lock; SQLite's write lock taken at BEGIN) and never overdraw it.

Signs: a top-up, release or refund adds; a hold or charge subtracts; an adjustment is either.
A job's hold, charge and release are each unique per job (index uq_ledger_entries_job), so a
job completed, failed or cancelled twice moves money once. Amounts are Decimal USD with six
places; functions here only flush: the caller's transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, PaymentRequired
from app.models import Business, LedgerEntry, LedgerKind, USD_PLACES, utcnow

ZERO = Decimal("0.000000")


def usd(value: Decimal) -> Decimal:
    return value.quantize(USD_PLACES, rounding=ROUND_HALF_UP)


def price_of(tokens: int, price_per_1k_usd: Decimal) -> Decimal:
    """USD for `tokens` output tokens at `price_per_1k_usd` per 1000 (half up, micro-dollars)."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError("tokens must be a non-negative int")
    return usd(Decimal(tokens) * price_per_1k_usd / 1000)


@dataclass(frozen=True)
class JobRef:
    kind: str  # chat | idle
    job_id: str


async def _append(session: AsyncSession, business_id: int, kind: LedgerKind, amount: Decimal,
                  *, now: datetime | None = None, **fields: object) -> int:
    """Append one entry and move the balance by `amount` (no floor: callers that must not
    overdraw use _take). Returns the entry's id."""
    await session.execute(update(Business).where(Business.id == business_id)
                          .values(balance_usd=Business.balance_usd + amount)
                          .execution_options(synchronize_session=False))
    return await _insert(session, business_id, kind, amount, now=now, **fields)


async def _insert(session: AsyncSession, business_id: int, kind: LedgerKind, amount: Decimal,
                  *, now: datetime | None = None, **fields: object) -> int:
    result = await session.execute(
        insert(LedgerEntry).values(business_id=business_id, kind=kind, amount_usd=amount,
                                   created_at=now or utcnow(), **fields)
        .returning(LedgerEntry.id))
    return int(result.scalar_one())


async def _take(session: AsyncSession, business_id: int, amount: Decimal) -> bool:
    """Subtract `amount` from the balance if it covers it: one conditional UPDATE."""
    result = await session.execute(
        update(Business).where(Business.id == business_id, Business.balance_usd >= amount,
                               Business.removed_at.is_(None))
        .values(balance_usd=Business.balance_usd - amount)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


async def balance(session: AsyncSession, business_id: int) -> Decimal:
    value = (await session.execute(
        select(Business.balance_usd).where(Business.id == business_id))).scalar()
    if value is None:
        raise NotFound("no such business", code="business_not_found")
    return value


async def sum_of_entries(session: AsyncSession, business_id: int) -> Decimal:
    """The balance by definition: the sum of the business's entries (exact: micro-dollar SUM)."""
    total = (await session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount_usd), Decimal(0)))
        .where(LedgerEntry.business_id == business_id))).scalar_one()
    return usd(Decimal(total))


async def hold(session: AsyncSession, business_id: int, job: JobRef, amount: Decimal, *,
               tokens: int, price_per_1k_usd: Decimal, api_key_id: int | None,
               model: str | None = None, now: datetime | None = None) -> int:
    """Reserve `amount` for a submitted job, or raise 402 insufficient_balance (nothing is
    written then: the caller's transaction is rolled back by the error)."""
    if amount < 0:
        raise ValueError("a hold is a non-negative amount")
    if not await _take(session, business_id, amount):
        available = await balance(session, business_id)
        raise PaymentRequired(
            f"the balance ({available} USD) does not cover this job's most expensive outcome "
            f"({amount} USD); top up the account", code="insufficient_balance",
            extra={"balance_usd": str(available), "required_usd": str(amount)})
    return await _insert(session, business_id, LedgerKind.hold, -amount, now=now,
                         job_kind=job.kind, job_id=job.job_id, api_key_id=api_key_id,
                         model=model, tokens=tokens, price_per_1k_usd=price_per_1k_usd,
                         actor="system")


async def _the_hold(session: AsyncSession, job: JobRef) -> LedgerEntry | None:
    return (await session.execute(select(LedgerEntry).where(
        LedgerEntry.job_kind == job.kind, LedgerEntry.job_id == job.job_id,
        LedgerEntry.kind == LedgerKind.hold))).scalar()


async def _released(session: AsyncSession, job: JobRef) -> bool:
    return (await session.execute(select(LedgerEntry.id).where(
        LedgerEntry.job_kind == job.kind, LedgerEntry.job_id == job.job_id,
        LedgerEntry.kind == LedgerKind.release))).first() is not None


async def settle(session: AsyncSession, job: JobRef, tokens: int, *,
                 now: datetime | None = None) -> tuple[int, Decimal] | None:
    """A completed job: release its hold and charge `tokens` (the server's count) at the price
    it was held at, never more than was held. Returns (charge entry id, amount), or None when
    the job held nothing (not priced, or submitted before the ledger). Call only after the
    conditional UPDATE that completed the job won, in that transaction."""
    held = await _the_hold(session, job)
    if held is None or await _released(session, job):
        # nothing held, or the hold was already given back (the job was cancelled or failed
        # first): charging now would take money no hold reserved
        return None
    hold_amount = -held.amount_usd
    charged_tokens = min(tokens, held.tokens) if held.tokens is not None else tokens
    amount = min(price_of(charged_tokens, held.price_per_1k_usd or ZERO), hold_amount)
    common = dict(job_kind=job.kind, job_id=job.job_id, api_key_id=held.api_key_id,
                  model=held.model, now=now)
    # the release (+hold) and the charge (-amount) move the balance in one UPDATE
    await session.execute(update(Business).where(Business.id == held.business_id)
                          .values(balance_usd=Business.balance_usd + (hold_amount - amount))
                          .execution_options(synchronize_session=False))
    await _insert(session, held.business_id, LedgerKind.release, hold_amount, **common)
    charge_id = await _insert(session, held.business_id, LedgerKind.charge, -amount,
                              tokens=charged_tokens, price_per_1k_usd=held.price_per_1k_usd,
                              actor="system", **common)
    return charge_id, amount


async def release_job(session: AsyncSession, job: JobRef, *, now: datetime | None = None,
                      note: str | None = None) -> Decimal:
    """A failed or cancelled job gives its whole hold back (once). Returns what was released."""
    held = await _the_hold(session, job)
    if held is None:
        return ZERO
    if await _released(session, job):
        return ZERO
    await _append(session, held.business_id, LedgerKind.release, -held.amount_usd,
                  job_kind=job.kind, job_id=job.job_id, api_key_id=held.api_key_id,
                  model=held.model, now=now, note=note, actor="system")
    return -held.amount_usd


async def credit(session: AsyncSession, business_id: int, amount: Decimal, *, reference: str,
                 actor: str, kind: LedgerKind = LedgerKind.topup, note: str | None = None,
                 now: datetime | None = None) -> tuple[int, bool]:
    """A top-up (or refund/adjustment) with an external reference, idempotent on it: the same
    reference for the same business and kind credits once (another amount under it: 409).
    Two concurrent first credits meet the unique index: the loser's transaction fails with
    IntegrityError and its retry finds the winner's entry. Returns (entry id, created)."""
    existing = (await session.execute(select(LedgerEntry.id, LedgerEntry.amount_usd).where(
        LedgerEntry.business_id == business_id, LedgerEntry.kind == kind,
        LedgerEntry.reference == reference))).first()
    if existing is not None:
        if existing.amount_usd != amount:
            raise Conflict(f"reference {reference!r} already credited {existing.amount_usd} USD "
                           "to this business; a new payment needs a new reference",
                           code="reference_reused")
        return int(existing.id), False
    entry_id = await _append(session, business_id, kind, amount, reference=reference,
                             actor=actor, note=note, now=now)
    return entry_id, True
