"""Helpers for the accounts tests: the ledger's invariants, a job's entries, balances."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from app.accounts import ledger
from app.models import ApiKey, Business, LedgerEntry, RevenueEvent
from tests.support.harness import Harness


async def check_invariants(api: Harness) -> None:
    """Every business's balance is the sum of its entries and never negative; every charge is
    booked as exactly one revenue event of the same amount, and no revenue is unbacked."""
    async with api.ctx.db.sessions() as s:
        businesses = (await s.execute(select(Business.id, Business.balance_usd))).all()
        for business_id, balance in businesses:
            assert balance == await ledger.sum_of_entries(s, business_id), business_id
            assert balance >= 0, (business_id, balance)
        charges = dict((await s.execute(select(LedgerEntry.id, LedgerEntry.amount_usd).where(
            LedgerEntry.kind == "charge"))).all())
        booked = dict((await s.execute(select(RevenueEvent.ledger_entry_id,
                                              RevenueEvent.amount_usd).where(
            RevenueEvent.carried_from_buyback_id.is_(None)))).all())
    assert booked == {entry: -amount for entry, amount in charges.items()}


async def business_of(api: Harness, key: str) -> int:
    async with api.ctx.db.sessions() as s:
        return int((await s.execute(select(ApiKey.business_id).where(
            ApiKey.prefix == key[:10]))).scalar_one())


async def key_id_of(api: Harness, key: str) -> int:
    async with api.ctx.db.sessions() as s:
        return int((await s.execute(select(ApiKey.id).where(
            ApiKey.prefix == key[:10]))).scalar_one())


async def balance(api: Harness, business_id: int) -> Decimal:
    async with api.ctx.db.sessions() as s:
        return await ledger.balance(s, business_id)


async def entries(api: Harness, job_kind: str, job_id: str) -> dict[str, Any]:
    """{kind: (amount, tokens)} of one job's ledger entries."""
    async with api.ctx.db.sessions() as s:
        rows = (await s.execute(select(LedgerEntry.kind, LedgerEntry.amount_usd,
                                       LedgerEntry.tokens).where(
            LedgerEntry.job_kind == job_kind, LedgerEntry.job_id == job_id))).all()
    out: dict[str, Any] = {}
    for kind, amount, tokens in rows:
        assert kind not in out, f"two {kind} entries for {job_kind} {job_id}"
        out[kind] = (amount, tokens)
    return out


async def count_entries(api: Harness) -> int:
    async with api.ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(LedgerEntry))).scalar_one())
