"""Operators manage businesses: their records, keys and monthly limits, credits, the ledger."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response

from app.accounts import businesses, history
from app.accounts.credits import credit_business
from app.accounts.schemas import (AdjustmentIn, BusinessIn, BusinessList, BusinessOut,
                                  BusinessPatch, CreditIn, CreditOut, KeyCreated, KeyIn,
                                  KeyLimitIn, KeyList, KeyOut, LedgerPage, PageQuery)
from app.accounts.spend import key_spend
from app.accounts.views import business_out, entry_out, key_out
from app.accounts import keys
from app.auth import apikeys
from app.auth.guards import wallet_guard
from app.auth.principals import Wallet
from app.context import ctx
from app.errors import Conflict, NotFound
from app.models import LedgerKind, utcnow
from app.web import Router, json_response

log = logging.getLogger(__name__)
router = Router("businesses")
OPERATOR = dict(auth=("MinerToken",), guard=wallet_guard("operator"))
REPLAYED = {"Idempotent-Replayed": "true"}


def path_id(request: Request, name: str) -> int | None:
    """A path's numeric id, or None (then 404) for anything else: no 500 on 'abc' or 10**30."""
    raw = request.path_params[name]
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


@router.post("/businesses", body=BusinessIn, responses={201: BusinessOut}, errors=(403, 409),
             **OPERATOR)
async def create_business(request: Request, who: Wallet, body: BusinessIn) -> Response:
    """Operator: create a business (with its deposit reference); 409 business_exists."""
    for attempt in range(2):
        try:
            async with ctx(request).db.transaction() as session:
                business = await businesses.create_business(session, **body.model_dump())
            break
        except IntegrityError:  # a concurrent creation of the name won: once more says 409
            if attempt:
                raise Conflict("concurrent changes to this business; retry",
                               code="business_conflict") from None
    log.info("business %d created by %s", business.id, who.address)
    return json_response(business_out(business), 201)


@router.get("/businesses", query=PageQuery, responses={200: BusinessList}, errors=(403,),
            **OPERATOR)
async def list_businesses(request: Request, who: Wallet, query: PageQuery) -> BusinessList:
    """Operator: businesses newest first, with balances (removed ones show removed_at)."""
    async with ctx(request).db.reads() as session:
        rows = await businesses.list_businesses(session, before=query.before,
                                                limit=query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    return BusinessList(items=[business_out(b) for b in rows],
                        next_before=rows[-1].id if more else None)


@router.get("/businesses/{business_id}", responses={200: BusinessOut}, errors=(403, 404),
            **OPERATOR)
async def get_business(request: Request, who: Wallet) -> BusinessOut:
    """Operator: one business, with its balance."""
    async with ctx(request).db.reads() as session:
        business = await businesses.get_business(session, path_id(request, "business_id"))
    return business_out(business)


@router.patch("/businesses/{business_id}", body=BusinessPatch, responses={200: BusinessOut},
              errors=(403, 404, 409), **OPERATOR)
async def update_business(request: Request, who: Wallet, body: BusinessPatch) -> BusinessOut:
    """Operator: change the fields sent (null clears contacts, the threshold, the retention
    override). A removed business is not changed (409 business_removed)."""
    changes = {f: getattr(body, f) for f in body.model_fields_set}
    for attempt in range(2):
        try:
            async with ctx(request).db.transaction() as session:
                business = await businesses.update_business(
                    session, path_id(request, "business_id"), changes)
            break
        except IntegrityError:  # renamed concurrently to the same name: once more says 409
            if attempt:
                raise Conflict("concurrent changes to this business; retry",
                               code="business_conflict") from None
    log.info("business %d changed (%s) by %s", business.id, ", ".join(sorted(changes)),
             who.address)
    return business_out(business)


@router.post("/businesses/{business_id}/keys", body=KeyIn, responses={201: KeyCreated},
             errors=(403, 404, 409), **OPERATOR)
async def create_key(request: Request, who: Wallet, body: KeyIn) -> Response:
    """Operator: a key for this business, shown once; optionally with a monthly limit (USD)."""
    async with ctx(request).db.transaction() as session:
        business = await businesses.get_business(session, path_id(request, "business_id"))
        key, plaintext = await keys.create_key(session, business, body.scopes,
                                                  monthly_limit_usd=body.monthly_limit_usd)
        spend = (await key_spend(session, [key.id], utcnow()))[key.id]
    log.info("API key %d (%s...) created for business %d by %s", key.id, key.prefix,
             business.id, who.address)
    return json_response(KeyCreated(**key_out(key, spend).model_dump(), key=plaintext), 201)


@router.get("/businesses/{business_id}/keys", responses={200: KeyList}, errors=(403, 404),
            **OPERATOR)
async def list_keys(request: Request, who: Wallet) -> KeyList:
    """Operator: the business's keys (by prefix), each with its spend this month."""
    async with ctx(request).db.reads() as session:
        business = await businesses.get_business(session, path_id(request, "business_id"))
        keys = await apikeys.business_keys(session, business.id)
        spend = await key_spend(session, [k.id for k in keys], utcnow())
    return KeyList(keys=[key_out(k, spend[k.id]) for k in keys])


@router.patch("/businesses/{business_id}/keys/{key_id}", body=KeyLimitIn,
              responses={200: KeyOut}, errors=(403, 404, 409), **OPERATOR)
async def set_key_limit(request: Request, who: Wallet, body: KeyLimitIn) -> KeyOut:
    """Operator: set a key's monthly limit in USD (null removes it)."""
    async with ctx(request).db.transaction() as session:
        business = await businesses.get_business(session, path_id(request, "business_id"))
        businesses.refuse_removed(business)
        key = await apikeys.set_monthly_limit(session, business.id, path_id(request, "key_id"),
                                              body.monthly_limit_usd)
        if key is None:
            raise NotFound("this business has no such API key", code="api_key_not_found")
        spend = (await key_spend(session, [key.id], utcnow()))[key.id]
    log.info("API key %d monthly limit set to %s by %s", key.id, key.monthly_limit_usd,
             who.address)
    return key_out(key, spend)


async def _credit(request: Request, who: Wallet, kind: LedgerKind, body: Any) -> Response:
    done = await credit_business(ctx(request).db, path_id(request, "business_id"),
                                 body.amount_usd, reference=body.reference, actor=who.address,
                                 kind=kind, note=body.note)
    if done.created:
        log.info("%s of %s USD to business %d (reference %r) by %s", kind, body.amount_usd,
                 done.entry.business_id, body.reference, who.address)
    out = CreditOut(entry=entry_out(done.entry), balance_usd=done.balance_usd)
    return json_response(out, 201) if done.created else json_response(out, 200, REPLAYED)


CREDIT_SPEC: dict[str, Any] = dict(responses={201: CreditOut, 200: CreditOut},
                                   errors=(403, 404, 409), **OPERATOR)


@router.post("/businesses/{business_id}/credits", body=CreditIn, **CREDIT_SPEC)
async def credit(request: Request, who: Wallet, body: CreditIn) -> Response:
    """Operator: add money received (an invoice paid, a transfer) under its reference.

    Idempotent on the reference: the same reference and amount again answers 200 with the
    first entry and `Idempotent-Replayed: true`, crediting nothing; another amount under it is
    409 reference_reused."""
    return await _credit(request, who, LedgerKind.topup, body)


@router.post("/businesses/{business_id}/refunds", body=CreditIn, **CREDIT_SPEC)
async def refund(request: Request, who: Wallet, body: CreditIn) -> Response:
    """Operator: give money back for charges (a positive entry), idempotent on the reference."""
    return await _credit(request, who, LedgerKind.refund, body)


@router.post("/businesses/{business_id}/adjustments", body=AdjustmentIn, **CREDIT_SPEC)
async def adjust(request: Request, who: Wallet, body: AdjustmentIn) -> Response:
    """Operator: a correction of either sign, with a note saying why; idempotent on the
    reference. A negative one may take the balance below zero (new holds are refused then)."""
    return await _credit(request, who, LedgerKind.adjustment, body)


@router.get("/businesses/{business_id}/ledger", query=PageQuery, responses={200: LedgerPage},
            errors=(403, 404), **OPERATOR)
async def business_ledger(request: Request, who: Wallet, query: PageQuery) -> LedgerPage:
    """Operator: a business's ledger entries, newest first (?before=<id>&limit=)."""
    async with ctx(request).db.reads() as session:
        business = await businesses.get_business(session, path_id(request, "business_id"))
        rows, next_before = await history.entries(session, business.id, before=query.before,
                                                  limit=query.limit)
    return LedgerPage(items=[entry_out(e) for e in rows], next_before=next_before)
