"""What the job paths call to be paid: a hold at submission, a charge (and its revenue) at
completion, a release on every failure. The one face of accounts for chat and idle jobs; the
ledger (ledger.py) underneath keeps the balance.

Rules (README, "Paying for jobs"):
- A kind's price is per 1000 output tokens (settings): idle PRICE_PER_1K_TOKENS_USD (alias
  IDLE_PRICE_PER_1K_TOKENS_USD), chat CHAT_PRICE_PER_1K_TOKENS_USD (0, the default: free).
  A kind priced 0 holds nothing, charges nothing and books no revenue.
- Submission holds the job's most expensive outcome: max_tokens x price (chat without
  max_tokens: CHAT_HOLD_MAX_TOKENS). Not covered by the balance: 402 insufficient_balance and
  nothing is written or queued (the caller's transaction rolls back).
- Monthly key limit (ApiKey.monthly_limit_usd): a key's spend in a calendar month (UTC) is what
  its jobs submitted in that month cost: charges of completed ones plus holds of open ones
  (failed ones: nothing). A job counts in the month its hold was made, whenever it completes:
  a month's figure only changes by that month's jobs. A hold that would take the spend past
  the limit: 402 key_limit_reached.
- Completion charges the server's token count at the price held at, never more than was held,
  and books exactly that as revenue (RevenueEvent.ledger_entry_id = the charge): revenue is
  what was charged. A job with no hold (price 0 at submission, or submitted before the ledger)
  earns nothing: there was no payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.accounts import ledger
from app.accounts.ledger import JobRef
from app.auth.principals import Client
from app.config import Settings
from app.errors import PaymentRequired, Unauthorized
from app.models import (USD, ApiKey, Business, LedgerEntry, LedgerKind, RevenueEvent,
                        UTCDateTime, utcnow)

CHAT, IDLE = "chat", "idle"


def price_per_1k(settings: Settings, job_kind: str) -> Decimal:
    """USD per 1000 output tokens a business pays for a job of this kind."""
    if job_kind == CHAT:
        return settings.chat_price_per_1k_tokens_usd
    if job_kind == IDLE:
        return settings.price_per_1k_tokens_usd
    raise ValueError(f"unknown job kind {job_kind!r}")


def chat_priced(settings: Settings) -> bool:
    """Whether chat submissions hold money (and so go through the SQLAlchemy path)."""
    return settings.chat_price_per_1k_tokens_usd > 0


def hold_tokens(settings: Settings, job_kind: str, max_tokens: int | None) -> int:
    """The most output tokens a job may be charged for: its max_tokens, or for a chat that
    names none, CHAT_HOLD_MAX_TOKENS (its charge is capped there)."""
    if max_tokens is not None:
        return max_tokens
    if job_kind == CHAT:
        return settings.chat_hold_max_tokens
    raise ValueError("an idle job always names max_tokens")


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s calendar month, UTC."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 \
        else start.replace(month=start.month + 1)


async def month_spend(session: AsyncSession, api_key_id: int, now: datetime) -> Decimal:
    """USD the key's jobs submitted in `now`'s calendar month (UTC) cost so far: for each hold
    made in that month, what its job's entries took (the hold while open; hold + release +
    charge = the charge once completed; 0 once failed). One aggregate over the key's holds (index
    ix_ledger_entries_key_created) and their jobs' entries (uq_ledger_entries_job)."""
    held = aliased(LedgerEntry)
    total = (await session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount_usd), Decimal(0)))
        .select_from(held)
        .join(LedgerEntry, (LedgerEntry.job_kind == held.job_kind)
              & (LedgerEntry.job_id == held.job_id))
        .where(held.api_key_id == api_key_id, held.kind == LedgerKind.hold,
               held.created_at >= month_start(now), held.created_at < next_month_start(now),
               LedgerEntry.kind.in_((LedgerKind.hold, LedgerKind.release, LedgerKind.charge)))
    )).scalar_one()
    return ledger.usd(-Decimal(total))


async def hold_for(session: AsyncSession, settings: Settings, client: Client, job_kind: str,
                   job_id: str, max_tokens: int | None, model: str | None = None, *,
                   now: datetime | None = None) -> Decimal | None:
    """Hold the job's most expensive outcome on the client's business, in the caller's
    transaction; the amount held (the caller stores it as the job's hold_usd), or None when the
    kind is not priced. Raises 401 api_key_required (priced, no business), 402
    insufficient_balance, or 402 key_limit_reached; the caller's transaction then rolls back
    and nothing is queued.

    The limit is checked after the hold's conditional UPDATE of the business's balance: that
    UPDATE locks the business's row until commit (PostgreSQL; SQLite's write lock is taken at
    BEGIN IMMEDIATE), so concurrent submissions of one business, and so of one key, run this
    check one at a time and each sees the others' committed holds."""
    price = price_per_1k(settings, job_kind)
    if price <= 0:
        return None
    if client.business_id is None:
        raise Unauthorized("this server charges for chat: send an API key of a business with a "
                           "balance (Authorization: Bearer ...)", code="api_key_required")
    now = now or utcnow()
    tokens = hold_tokens(settings, job_kind, max_tokens)
    amount = ledger.price_of(tokens, price)
    await ledger.hold(session, client.business_id, JobRef(job_kind, job_id), amount,
                      tokens=tokens, price_per_1k_usd=price, api_key_id=client.api_key_id,
                      model=model, now=now)
    if client.api_key_id is not None:
        limit = (await session.execute(select(ApiKey.monthly_limit_usd).where(
            ApiKey.id == client.api_key_id))).scalar()
        if limit is not None:
            spent = await month_spend(session, client.api_key_id, now)  # this hold included
            if spent > limit:
                before = ledger.usd(spent - amount)
                raise PaymentRequired(
                    f"this API key may spend {limit} USD a month (UTC) and has spent {before} "
                    f"USD this month; this job may cost up to {amount} USD",
                    code="key_limit_reached",
                    extra={"limit_usd": str(limit), "spent_usd": str(before),
                           "required_usd": str(amount)})
    return amount


async def lock_payers(session: AsyncSession, model: Any, job_ids: list[Any]) -> None:
    """Lock, in id order, the businesses that completing these jobs (of `model`, a job table
    with business_id and hold_usd) will charge: a batch then takes its business rows in one
    order, as every other multi-row writer does (app/accounts/pg.py), and two batches over the
    same businesses wait for each other instead of deadlocking. (SQLite: one writer; no-op.)"""
    if session.bind.dialect.name == "sqlite":
        return
    payers = select(model.business_id).where(model.id.in_(job_ids), model.hold_usd.is_not(None))
    await session.execute(select(Business.id).where(Business.id.in_(payers))
                          .order_by(Business.id).with_for_update(key_share=True))  # NO KEY UPDATE


@dataclass(frozen=True)
class Charge:
    entry_id: int  # the ledger's charge entry (RevenueEvent.ledger_entry_id)
    amount_usd: Decimal  # what was charged, and booked as revenue
    tokens: int  # the tokens charged (the server's count, capped at what was held for)


async def settle(session: AsyncSession, job_kind: str, job_id: str, tokens: int, *, source: str,
                 now: datetime, idle_job_id: int | None = None) -> Charge | None:
    """A job just completed (call only after the conditional UPDATE that completed it won, in
    that transaction): charge `tokens` (the server's count) at the price held at, release the
    rest, and book the charge as revenue from `source` (miner | runpod | chat). None when the
    job held nothing: no charge, no revenue."""
    settled = await ledger.settle(session, JobRef(job_kind, job_id), tokens, now=now)
    if settled is None:
        return None
    entry_id, amount = settled
    # the revenue event is copied from the charge entry, in one statement
    charged = (await session.execute(
        insert(RevenueEvent).from_select(
            ["idle_job_id", "amount_usd", "source", "output_tokens", "created_at",
             "ledger_entry_id"],
            select(literal(idle_job_id, Integer), literal(amount, USD), literal(source),
                   LedgerEntry.tokens, literal(now, UTCDateTime), LedgerEntry.id)
            .where(LedgerEntry.id == entry_id))
        .returning(RevenueEvent.output_tokens))).scalar_one()
    return Charge(entry_id, amount, charged)


async def release(session: AsyncSession, job_kind: str, job_ids: Any, *,
                  note: str | None = None) -> Decimal:
    """Jobs that failed or were cancelled (call in the transaction that failed them): each gives
    its whole hold back, once. Jobs without a hold cost one read each. Returns the USD released."""
    total = ledger.ZERO
    for job_id in job_ids:
        total += await ledger.release_job(session, JobRef(job_kind, str(job_id)), note=note)
    return total
