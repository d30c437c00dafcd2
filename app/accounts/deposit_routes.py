"""Deposits over HTTP: anyone lists them (what the chain shows, and whether each was credited:
never which business it was for), operators see the businesses and assign an unattributed one.

The public list carries each deposit's memo as it is in the transaction's input (already public
on chain to anyone who reads the treasury's Transfers), so `mia verify-deposits` can check every
credit from chain data alone; it never carries a business id or name.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import Field
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from app.accounts import deposits as service
from app.auth.guards import wallet_guard
from app.auth.principals import Wallet
from app.context import ctx
from app.errors import NotFound
from app.models import Deposit
from app.schemas import QueryParams, RequestBody, ResponseBody
from app.treasury.repository import deposit_totals
from app.treasury.schemas import Units, USDStr
from app.web import Router, json_response

router = Router("deposits")
OPERATOR = dict(auth=("MinerToken",), guard=wallet_guard("operator"))
PUBLIC_CACHE = {"Cache-Control": "public, max-age=15"}
MAX_ID = 2**31 - 1


class DepositStatus(str, Enum):
    seen = "seen"
    credited = "credited"
    unattributed = "unattributed"
    dropped = "dropped"
    reversed = "reversed"


class DepositQuery(QueryParams):
    status: DepositStatus | None = None
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=MAX_ID)


class DepositOut(ResponseBody):
    id: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    token: str
    amount: Units  # stablecoin base units
    amount_usd: USDStr  # base units / 10**decimals, rounded down to the micro-dollar
    reference: str | None  # the memo the transaction carried (16 hex), None without one
    status: DepositStatus
    attributed: bool  # credited (or to be credited) to a business
    seen_at: datetime
    credited_at: datetime | None
    explorer_url: str | None


class DepositList(ResponseBody):
    items: list[DepositOut]
    total: int
    limit: int
    offset: int
    credited_count: int  # every credited deposit, all pages
    credited_usd: USDStr
    confirmations: int  # blocks (its own included) before a deposit is credited


class OperatorDepositOut(DepositOut):
    business_id: int | None
    ledger_entry_id: int | None
    reversal_entry_id: int | None


class OperatorDepositList(ResponseBody):
    items: list[OperatorDepositOut]
    total: int


class AssignIn(RequestBody):
    business_id: int = Field(ge=1, le=MAX_ID)


def _explorer(request: Request, tx_hash: str) -> str | None:
    template = ctx(request).settings.explorer_tx_url
    if not template:
        return None
    return template.replace("{tx_hash}", tx_hash) if "{tx_hash}" in template else template + tx_hash


def _out(request: Request, d: Deposit) -> dict[str, object]:
    return dict(id=d.id, tx_hash=d.tx_hash, log_index=d.log_index, block_number=d.block_number,
                block_hash=d.block_hash, from_address=d.from_address, token=d.token_address,
                amount=d.amount, amount_usd=d.amount_usd, reference=d.reference,
                status=d.status, attributed=d.business_id is not None, seen_at=d.seen_at,
                credited_at=d.credited_at, explorer_url=_explorer(request, d.tx_hash))


async def _page(request: Request, query: DepositQuery) -> tuple[list[Deposit], int]:
    where = [] if query.status is None else [Deposit.status == query.status.value]
    async with ctx(request).db.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(Deposit)
                                       .where(*where))).scalar_one()
        rows = list((await session.execute(select(Deposit).where(*where)
                                           .order_by(Deposit.id.desc())
                                           .limit(query.limit).offset(query.offset))).scalars())
    return rows, int(total)


@router.get("/deposits", query=DepositQuery, responses={200: DepositList})
async def list_deposits(request: Request, query: DepositQuery) -> Response:
    """Public: stablecoin deposits into the treasury, newest first, with their transactions,
    memos and explorer links, and the credited total. Which business a deposit was for is not
    shown. Check them against the chain with `mia verify-deposits`."""
    rows, total = await _page(request, query)
    async with ctx(request).db.sessions() as session:
        totals = await deposit_totals(session)
    return json_response(DepositList(
        items=[DepositOut(**_out(request, d)) for d in rows], total=total, limit=query.limit,
        offset=query.offset, credited_count=totals.credited, credited_usd=totals.credited_usd,
        confirmations=max(ctx(request).settings.confirmations, 1)), headers=PUBLIC_CACHE)


@router.get("/treasury/deposits", query=DepositQuery, responses={200: OperatorDepositList},
            errors=(401, 403), **OPERATOR)
async def operator_deposits(request: Request, who: Wallet, query: DepositQuery) -> OperatorDepositList:
    """Operator: deposits with the business each was credited to and its ledger entries
    (`?status=unattributed`: the ones waiting for an operator)."""
    rows, total = await _page(request, query)
    return OperatorDepositList(items=[OperatorDepositOut(
        **_out(request, d), business_id=d.business_id, ledger_entry_id=d.ledger_entry_id,
        reversal_entry_id=d.reversal_entry_id) for d in rows], total=total)


@router.post("/deposits/{deposit_id}/assign", body=AssignIn, responses={200: OperatorDepositOut},
             errors=(401, 403, 404, 409), **OPERATOR)
async def assign_deposit(request: Request, who: Wallet, body: AssignIn) -> OperatorDepositOut:
    """Operator: credit an unattributed deposit (no memo, or one no business has) to a
    business. Once: 409 deposit_not_unattributed for any other status."""
    raw = request.path_params["deposit_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > MAX_ID:
        raise NotFound(f"no deposit {raw[:40]!r}", code="deposit_not_found")
    async with ctx(request).db.transaction() as session:
        d = await service.assign(session, int(raw), body.business_id, f"operator:{who.address}")
    return OperatorDepositOut(**_out(request, d), business_id=d.business_id,
                              ledger_entry_id=d.ledger_entry_id,
                              reversal_entry_id=d.reversal_entry_id)
