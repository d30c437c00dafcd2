"""Treasury HTTP API: operators trigger and inspect buybacks; anyone reads and verifies burns."""

from __future__ import annotations

import logging
from decimal import Decimal

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from app.auth.guards import require_wallet
from app.blockcache import per_block
from app.context import ctx
from app.errors import NotFound
from app.models import (ACTIVE_BUYBACK_STATUSES, Buyback, BuybackEvent, BuybackStatus, BuybackTx,
                        TreasuryControl)
from app.ratelimit import limit_chain_reads
from app.treasury import repository, verify
from app.treasury.dispatch import enqueue_buyback
from app.treasury.fingerprints import burn_records, summary_records
from app.treasury.onchain import get_treasury
from app.treasury.cancel import cancel
from app.treasury.schemas import (BuybackList, BuybackOut, BuybackQuery, BurnList, BurnOut,
                                  CancelOut, ControlOut, DryRunOut, EventOut, PageQuery, PauseIn,
                                  SummaryOut, TriggerIn, TriggerOut, TxOut, VerifyOut)
from app.web import Router, json_response

log = logging.getLogger(__name__)
router = Router("treasury")
PUBLIC_CACHE = {"Cache-Control": "public, max-age=30"}


def _explorer(request: Request, tx_hash: str | None) -> str | None:
    template = ctx(request).settings.explorer_tx_url
    if not template or not tx_hash:
        return None
    return template.replace("{tx_hash}", tx_hash) if "{tx_hash}" in template else template + tx_hash


MAX_ID = 2**31 - 1  # buybacks.id is INTEGER: a larger bind is an error on PostgreSQL


def _buyback_id(request: Request) -> int:
    raw = request.path_params["buyback_id"]
    # ASCII only: "²".isdigit() is True but int("²") raises
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > MAX_ID:
        raise NotFound(f"no buyback {raw[:40]!r}", code="buyback_not_found")
    return int(raw)


def _returned(bb: Buyback) -> Decimal | None:
    if bb.usd_swapped is None or bb.status != BuybackStatus.burned:
        return None
    return bb.usd_amount - bb.usd_swapped


def _buyback_out(request: Request, bb: Buyback, txs: list[BuybackTx], events: int,
                 log_: list[BuybackEvent]) -> BuybackOut:
    return BuybackOut(
        id=bb.id, status=bb.status, active=bb.status in ACTIVE_BUYBACK_STATUSES,
        usd_amount=bb.usd_amount, usd_claimed=bb.usd_amount, usd_swapped=bb.usd_swapped,
        usd_returned=_returned(bb), revenue_events=events, quote_amount_in=bb.quote_amount_in,
        amount_out_min_total=bb.amount_out_min_total, serv_received=bb.serv_received,
        serv_burned=bb.serv_burned, quote_unspent=bb.quote_unspent, triggered_by=bb.triggered_by,
        failure_reason=bb.failure_reason, gas_used_total=sum(t.gas_used or 0 for t in txs),
        created_at=bb.created_at, updated_at=bb.updated_at, completed_at=bb.completed_at,
        transactions=[TxOut(kind=t.kind, seq=t.seq, tx_hash=t.tx_hash, nonce=t.nonce,
                            status=t.status, amount_in=t.amount_in,
                            amount_out_min=t.amount_out_min, amount_out=t.amount_out,
                            block_number=t.block_number, gas_used=t.gas_used,
                            created_at=t.created_at, mined_at=t.mined_at,
                            explorer_url=_explorer(request, t.tx_hash)) for t in txs],
        events=[EventOut(kind=e.kind, detail=e.detail, created_at=e.created_at) for e in log_])


@router.post("/trigger-buyback", body=TriggerIn, responses={202: TriggerOut, 200: DryRunOut},
             errors=(401, 403, 409, 503), auth=("MinerToken",))
async def trigger_buyback(request: Request, body: TriggerIn) -> Response:
    """Operator: start a buyback with all unallocated revenue (or the oldest events up to
    `amount_usd`); 202 with its id, the worker swaps and burns. 409 while another is active.
    `dry_run: true` answers 200 with the quote, the expected $SERV, the price impact and the
    chunks, and changes nothing."""
    who = await require_wallet(request, "operator")
    c = ctx(request)
    t = await get_treasury(c)  # 503 when no chain or treasury is configured
    if body.dry_run:
        async with c.db.sessions() as session:
            usd, events = await repository.unallocated_usd(session)
        if body.amount_usd is not None:
            usd = min(usd, body.amount_usd)
        if usd <= 0:
            raise repository.NoRevenue("there is no unallocated revenue to buy back with")
        plan = await verify.dry_run(t, c.settings, usd)
        return json_response(DryRunOut(usd_amount=usd, revenue_events=events, **plan), 200)
    async with c.db.transaction() as session:
        bb = await repository.start_buyback(session, who.address, body.amount_usd)
        _, events = await repository.revenue_of(session, bb.id)
    try:
        await enqueue_buyback(c, bb.id)
    except RedisError as exc:  # committed: the worker's cron re-enqueues active buybacks
        log.warning("buyback %d committed but not enqueued (%s); the cron will", bb.id,
                    type(exc).__name__)
    return json_response(TriggerOut(buyback_id=bb.id, status=bb.status, usd_amount=bb.usd_amount,
                                    revenue_events=events), 202)


@router.get("/buybacks", query=BuybackQuery, responses={200: BuybackList}, errors=(401, 403),
            auth=("MinerToken",))
async def list_buybacks(request: Request, query: BuybackQuery) -> BuybackList:
    """Operator: every buyback, newest first, with its transactions."""
    await require_wallet(request, "operator")
    async with ctx(request).db.sessions() as session:
        rows, total = await repository.list_buybacks(session, status=query.status, limit=query.limit,
                                                  offset=query.offset)
        txs = await repository.txs_of(session, [b.id for b in rows])
        events = {b.id: (await repository.revenue_of(session, b.id))[1] for b in rows}
        logs = await repository.events_of(session, [b.id for b in rows])
    return BuybackList(items=[_buyback_out(request, b, txs[b.id], events[b.id], logs[b.id])
                              for b in rows],
                       total=total, limit=query.limit, offset=query.offset)


@router.get("/buybacks/{buyback_id}", responses={200: BuybackOut}, errors=(401, 403, 404),
            auth=("MinerToken",))
async def get_buyback(request: Request) -> BuybackOut:
    """Operator: one buyback with every transaction (hashes, nonces, gas, blocks)."""
    await require_wallet(request, "operator")
    bid = _buyback_id(request)
    async with ctx(request).db.sessions() as session:
        bb = await repository.get_buyback(session, bid)
        txs = (await repository.txs_of(session, [bid]))[bid]
        _, events = await repository.revenue_of(session, bid)
        log_ = (await repository.events_of(session, [bid]))[bid]
    return _buyback_out(request, bb, txs, events, log_)


@router.get("/burns", query=PageQuery, responses={200: BurnList})
async def list_burns(request: Request, query: PageQuery) -> Response:
    """Public: every completed burn, newest first, with swap and burn transactions and
    explorer links. Cacheable for 30 s."""
    c = ctx(request)
    async with c.db.sessions() as session:
        rows, total = await repository.list_buybacks(session, status=BuybackStatus.burned,
                                                  limit=query.limit, offset=query.offset)
        txs = await repository.txs_of(session, [b.id for b in rows])
    decimals = await verify.serv_decimals(c)
    items = []
    for b in rows:
        swaps = [t for t in txs[b.id] if t.kind == "swap" and t.status == "mined"]
        burn = next((t for t in txs[b.id] if t.kind == "burn" and t.status == "mined"), None)
        items.append(BurnOut(
            buyback_id=b.id, serv_burned=b.serv_burned or 0,
            serv_burned_decimal=verify.human(b.serv_burned or 0, decimals),
            usd_amount=b.usd_amount, usd_claimed=b.usd_amount,
            usd_swapped=b.usd_amount if b.usd_swapped is None else b.usd_swapped,
            partial=b.usd_swapped is not None and b.usd_swapped < b.usd_amount,
            swap_tx_hashes=[t.tx_hash for t in swaps],
            swap_blocks=[t.block_number or 0 for t in swaps],
            burn_tx_hash=burn.tx_hash if burn else "", burn_block=burn.block_number if burn else None,
            burned_at=b.completed_at,
            swap_explorer_urls=[u for t in swaps if (u := _explorer(request, t.tx_hash))],
            burn_explorer_url=_explorer(request, burn.tx_hash if burn else None),
            verify_url=f"{c.settings.base_url}/burns/{b.id}/verify"))
    return json_response(BurnList(items=items, total=total, limit=query.limit,
                                  offset=query.offset), headers=PUBLIC_CACHE)


@router.get("/burns/summary", responses={200: SummaryOut}, errors=(503,),
            limit=limit_chain_reads)
@per_block(summary_records)
async def burns_summary(request: Request) -> Response:
    """Public: $SERV burned per our records and per the chain (the treasury's Transfers to the
    burn address, and the burn address's balance, with the difference: anything else sent
    there); and the revenue ledger to the micro-dollar: revenue = swapped + unallocated + in
    flight. `reconciled` only when both the chain and the ledger agree with the records
    (`chain_reconciled`, `ledger_reconciled`; `disagreements` says where and by how much).
    And the USD that came in as stablecoin deposits credited to businesses (`deposits_usd`,
    `deposits_credited`; GET /deposits lists them). Cacheable for 30 s."""
    c = ctx(request)
    t = await get_treasury(c)
    async with c.db.sessions() as session:
        totals = await repository.totals(session)
        ledger = await repository.ledger(session)
        burns = await repository.burn_records(session)
        deposits = await repository.deposit_totals(session)
    out = await verify.summary(c, t, totals, ledger, burns, deposits)
    return json_response(out, headers=PUBLIC_CACHE)


@router.get("/burns/{buyback_id}/verify", responses={200: VerifyOut}, errors=(404, 503),
            limit=limit_chain_reads)
@per_block(burn_records)
async def verify_burn(request: Request) -> Response:
    """Public: re-read the chain and check the recorded burn: receipt success, a Transfer of
    $SERV from the treasury to the burn address, the amount equals the record, the swaps' output
    equals the burn's input, enough confirmations. `verified` is true only if every check is."""
    c = ctx(request)
    t = await get_treasury(c)
    bid = _buyback_id(request)
    async with c.db.sessions() as session:
        bb = await repository.get_buyback(session, bid)
        txs = (await repository.txs_of(session, [bid]))[bid]
    out = await verify.verify(t, c.settings, bb, txs)
    return json_response(out, headers=PUBLIC_CACHE)


def _control_out(row: TreasuryControl) -> ControlOut:
    return ControlOut(paused=row.paused, reason=row.reason, changed_by=row.changed_by,
                      updated_at=row.updated_at)


@router.get("/treasury/controls", responses={200: ControlOut}, errors=(401, 403),
            auth=("MinerToken",))
async def get_controls(request: Request) -> ControlOut:
    """Operator: whether buybacks are paused, by whom and why."""
    await require_wallet(request, "operator")
    async with ctx(request).db.sessions() as session:
        return _control_out(await repository.control(session))


@router.post("/treasury/pause", body=PauseIn, responses={200: ControlOut}, errors=(401, 403),
             auth=("MinerToken",))
async def pause(request: Request, body: PauseIn) -> ControlOut:
    """Operator: no buyback starts, and the active one sends nothing more (it waits where it
    is, with whatever it already sent still resolved), until resumed."""
    who = await require_wallet(request, "operator")
    async with ctx(request).db.transaction() as session:
        await repository.set_paused(session, True, who.address, body.reason)
        row = await repository.control(session)
    return _control_out(row)


@router.post("/treasury/resume", responses={200: ControlOut}, errors=(401, 403),
             auth=("MinerToken",))
async def resume(request: Request) -> ControlOut:
    """Operator: buybacks go on; the active one continues at its next run."""
    who = await require_wallet(request, "operator")
    async with ctx(request).db.transaction() as session:
        await repository.set_paused(session, False, who.address, None)
        row = await repository.control(session)
    return _control_out(row)


@router.post("/buybacks/{buyback_id}/cancel", responses={200: CancelOut},
             errors=(401, 403, 404, 409, 503), auth=("MinerToken",))
async def cancel_buyback(request: Request) -> CancelOut:
    """Operator: end a stuck buyback and release its revenue, only when the chain proves none
    of its transactions can still be mined (each nonce used, CONFIRMATIONS deep, by another
    transaction) and no swap was mined; 409 `buyback_not_cancellable` says which one can."""
    who = await require_wallet(request, "operator")
    c = ctx(request)
    bid = _buyback_id(request)
    bb, released = await cancel(c, bid, who.address)
    return CancelOut(buyback_id=bb.id, status=bb.status, failure_reason=bb.failure_reason,
                     revenue_events_released=released)
