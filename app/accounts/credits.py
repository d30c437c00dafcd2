"""Operators' credits: money in (top-up), given back (refund) or corrected (adjustment), each
under an external reference that makes it idempotent (ledger.credit). Shared by the HTTP
endpoints, `mia business credit` and `mia dev`'s seed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.accounts import ledger
from app.accounts.businesses import get_business, refuse_removed
from app.db import Database
from app.errors import Conflict
from app.models import LedgerEntry, LedgerKind

OPERATOR_KINDS = (LedgerKind.topup, LedgerKind.refund, LedgerKind.adjustment)


@dataclass(frozen=True)
class Credited:
    entry: LedgerEntry
    balance_usd: Decimal  # the business's balance right after (or now, for a replay)
    created: bool  # False: this reference was credited before, nothing changed


async def credit_business(db: Database, business_id: int | None, amount: Decimal, *,
                          reference: str, actor: str, kind: LedgerKind = LedgerKind.topup,
                          note: str | None = None) -> Credited:
    """Credit once per (business, kind, reference), in its own transaction. Two concurrent
    first credits meet the unique index: the loser's transaction rolls back whole (its balance
    update with it) and its one retry finds the winner's entry."""
    if kind not in OPERATOR_KINDS:
        raise ValueError(f"operators credit {OPERATOR_KINDS}, not {kind}")
    for attempt in range(2):
        try:
            async with db.transaction() as session:
                business = await get_business(session, business_id)
                refuse_removed(business)
                entry_id, created = await ledger.credit(session, business.id, amount,
                                                        reference=reference, actor=actor,
                                                        kind=kind, note=note)
                entry = (await session.execute(
                    select(LedgerEntry).where(LedgerEntry.id == entry_id))).scalar_one()
                balance = await ledger.balance(session, business.id)
            return Credited(entry, balance, created)
        except IntegrityError:
            if attempt:
                raise Conflict("concurrent credits under this reference; retry",
                               code="credit_conflict") from None
    raise AssertionError("unreachable")
