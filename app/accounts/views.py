"""Rows as response bodies, shared by the operators' and the businesses' own endpoints."""

from __future__ import annotations

from app.accounts.schemas import BusinessOut, EntryOut, KeyOut
from app.accounts.spend import Spend
from app.models import ApiKey, Business, LedgerEntry


def business_out(b: Business) -> BusinessOut:
    return BusinessOut(id=b.id, name=b.name, contact_email=b.contact_email,
                       contact_phone=b.contact_phone, retention_days=b.retention_days,
                       low_balance_usd=b.low_balance_usd, balance_usd=b.balance_usd,
                       deposit_ref=b.deposit_ref, created_at=b.created_at,
                       removed_at=b.removed_at)


def key_out(k: ApiKey, spend: Spend) -> KeyOut:
    return KeyOut(id=k.id, business_id=k.business_id, prefix=k.prefix, scopes=sorted(k.scope_set),
                  monthly_limit_usd=k.monthly_limit_usd, spent_this_month_usd=spend.spent_usd,
                  held_usd=spend.held_usd, created_at=k.created_at, revoked_at=k.revoked_at)


def entry_out(e: LedgerEntry) -> EntryOut:
    return EntryOut(id=e.id, business_id=e.business_id, kind=e.kind, amount_usd=e.amount_usd,
                    job_kind=e.job_kind, job_id=e.job_id, api_key_id=e.api_key_id, model=e.model,
                    tokens=e.tokens, price_per_1k_usd=e.price_per_1k_usd, reference=e.reference,
                    actor=e.actor, note=e.note, created_at=e.created_at)
