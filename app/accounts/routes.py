"""A business's own view, with any of its API keys: its account, its ledger, its usage."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta

from starlette.requests import Request
from starlette.responses import Response

from app.accounts import businesses, history
from app.accounts.instructions import HOW, memo_hex, treasury_address
from app.accounts.ledger import ZERO
from app.accounts.schemas import (AccountOut, DepositInstructions, KeyAccount, LedgerPage,
                                  PageQuery, UsageOut, UsageQuery, UsageRow)
from app.accounts.spend import business_spend, key_spend, month_start, next_month_start
from app.accounts.usage import usage
from app.accounts.views import business_out, entry_out
from app.auth.guards import any_key_guard
from app.auth.principals import Client
from app.context import ctx
from app.errors import BadRequest
from app.models import ApiKey, utcnow
from app.web import Router, json_response

router = Router("account")
BUSINESS = dict(auth=("ApiKey",), guard=any_key_guard)
MAX_RANGE = timedelta(days=366)
CSV = {"text/csv": {"schema": {"type": "string",
                               "description": "a header row (group, jobs, output_tokens, "
                                              "cost_usd), then one line per group"}}}


@router.get("/account", responses={200: AccountOut}, **BUSINESS)
async def account(request: Request, who: Client) -> AccountOut:
    """The calling business: balance, open holds, this month's spend, the calling key's limit
    and spend, and how to pay in on chain."""
    c = ctx(request)
    now = utcnow()
    async with c.db.reads() as session:
        business = await businesses.get_business(session, who.business_id)
        key = await session.get(ApiKey, who.api_key_id)
        totals = await business_spend(session, business.id, now)
        mine = (await key_spend(session, [who.api_key_id], now))[who.api_key_id] \
            if who.api_key_id is not None else None
    assert key is not None and mine is not None  # the guard just authenticated this key
    threshold = business.low_balance_usd
    retention = business.retention_days if business.retention_days is not None \
        else c.settings.chat_retention_days
    built = c.treasury.address if c.treasury is not None else None
    return AccountOut(
        business=business_out(business), retention_days_effective=retention,
        balance_usd=business.balance_usd, held_usd=totals.held_usd,
        spent_this_month_usd=totals.spent_usd,
        low_balance=threshold is not None and business.balance_usd < threshold,
        low_balance_usd=threshold,
        key=KeyAccount(id=key.id, prefix=key.prefix, scopes=sorted(key.scope_set),
                       monthly_limit_usd=key.monthly_limit_usd,
                       spent_this_month_usd=mine.spent_usd, held_usd=mine.held_usd),
        deposit=DepositInstructions(
            deposit_ref=business.deposit_ref, deposit_memo_hex=memo_hex(business.deposit_ref),
            treasury_address=treasury_address(c.settings, built),
            quote_token_address=c.settings.quote_token_address, chain_id=c.settings.chain_id,
            how=HOW))


@router.get("/account/ledger", query=PageQuery, responses={200: LedgerPage}, **BUSINESS)
async def account_ledger(request: Request, who: Client, query: PageQuery) -> LedgerPage:
    """The calling business's ledger entries, newest first (?before=<id>&limit=)."""
    async with ctx(request).db.reads() as session:
        business = await businesses.get_business(session, who.business_id)
        rows, next_before = await history.entries(session, business.id, before=query.before,
                                                  limit=query.limit)
    return LedgerPage(items=[entry_out(e) for e in rows], next_before=next_before)


def _instant(value: datetime | date) -> datetime:
    """A query's date or datetime as an aware UTC instant (a date: its midnight, UTC)."""
    if not isinstance(value, datetime):
        return datetime.combine(value, time(0), tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def usage_range(query: UsageQuery, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): this month by default; 400 unless end > start and at most 366 days."""
    try:
        start = _instant(query.start) if query.start is not None else month_start(now)
        end = _instant(query.end) if query.end is not None else next_month_start(now)
    except OverflowError:  # a datetime at the edge of year 1 or 9999 shifted to UTC
        raise BadRequest("from/to out of range", code="invalid_range") from None
    if end <= start:
        raise BadRequest("`to` must be after `from`", code="invalid_range")
    if end - start > MAX_RANGE:
        raise BadRequest(f"at most {MAX_RANGE.days} days at a time", code="range_too_long")
    return start, end


@router.get("/usage", query=UsageQuery, responses={200: UsageOut}, content={200: CSV},
            errors=(400,), **BUSINESS)
async def get_usage(request: Request, who: Client, query: UsageQuery) -> Response:
    """The calling business's completed jobs in [from, to), grouped by day (of completion,
    UTC), key, model or kind: jobs, output tokens (the server's count) and cost (what the
    ledger charged). JSON, or CSV with `Accept: text/csv`."""
    start, end = usage_range(query, utcnow())
    async with ctx(request).db.reads() as session:
        business = await businesses.get_business(session, who.business_id)
        rows = await usage(session, business.id, start, end, query.group_by)
    if "text/csv" in request.headers.get("accept", ""):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["group", "jobs", "output_tokens", "cost_usd"])
        for r in rows:
            writer.writerow([r.group, r.jobs, r.output_tokens, format(r.cost_usd, "f")])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    return json_response(UsageOut(
        start=start, end=end, group_by=query.group_by,
        rows=[UsageRow(group=r.group, jobs=r.jobs, output_tokens=r.output_tokens,
                       cost_usd=r.cost_usd) for r in rows],
        total_jobs=sum(r.jobs for r in rows),
        total_output_tokens=sum(r.output_tokens for r in rows),
        total_cost_usd=sum((r.cost_usd for r in rows), ZERO)))
