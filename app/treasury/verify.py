"""Reading the chain for the public endpoints and the dry run: verify a recorded burn, compare
totals with the burn address's balance, and price a buyback without sending anything."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from eth_utils import to_checksum_address
from web3.exceptions import TransactionNotFound

from app.config import Settings
from app.context import AppContext
from app.errors import AppError, ServiceUnavailable
from app.models import USD_PLACES, Buyback, BuybackStatus, BuybackTx
from app.treasury.onchain import Treasury, get_treasury
from app.treasury.schemas import CheckOut, ChunkOut, SummaryOut, VerifyOut
from app.treasury.repository import BurnRecords, DepositTotals, Ledger, Totals
from chain.burn import burned_by, verify_burn
from chain.dex import amount_out, plan_chunks, simulate_impact_bps
from chain.errors import ChainError, TxNotFound
from chain.tokens import received, transfers


def usd_of(units: int, decimals: int) -> Decimal:
    """Stablecoin base units as USD, rounded UP to the micro-dollar (what was swapped is never
    understated, so what goes back to unallocated is never more than was kept)."""
    return Decimal(units).scaleb(-decimals).quantize(USD_PLACES, rounding=ROUND_CEILING)


def human(units: int, decimals: int) -> str:
    """Base units as an exact decimal string of whole tokens."""
    return format(Decimal(units).scaleb(-decimals), "f")


async def serv_decimals(ctx: AppContext) -> int:
    try:
        t = await get_treasury(ctx)
        return await t.decimals(t.serv)
    except Exception:  # any provider error (aiohttp's are not OSError)
        return 18  # records stay readable without a chain; $SERV has 18 decimals


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    # The type only: provider messages quote the RPC URL, which often carries an API key.
    return ServiceUnavailable(f"the chain is unavailable: {type(exc).__name__}",
                              code="chain_unavailable")


BURN_LOG_STEP = 10_000  # blocks per eth_getLogs call of the summary's scan (providers cap it)


async def chain_burned(t: Treasury, from_block: int, head: int, depth: int) -> int:
    """$SERV base units the treasury transferred to the burn address in [from_block, head],
    from the chain's Transfer logs. The part at least ``depth`` blocks deep is kept on the
    Treasury and only extended, so each new block costs one eth_getLogs; the newer part is read
    again every time (a reorg may change it)."""
    final = head - max(depth, 1)
    cached = t.burn_scan
    if cached is not None and cached[0] == from_block and cached[1] <= final:
        start, total = cached[1] + 1, cached[2]
    else:
        start, total = from_block, 0
    if start <= final:
        total += await burned_by(t.w3, t.serv, t.address, burn_address=t.burn_address,
                                 from_block=start, to_block=final, step=BURN_LOG_STEP)
        t.burn_scan = (from_block, final, total)
    tail_from = max(final + 1, from_block)
    if tail_from <= head:
        total += await burned_by(t.w3, t.serv, t.address, burn_address=t.burn_address,
                                 from_block=tail_from, to_block=head, step=BURN_LOG_STEP)
    return total


async def summary(ctx: AppContext, t: Treasury, totals: Totals, ledger: Ledger,
                  burns: BurnRecords, deposits: DepositTotals) -> SummaryOut:
    depth = max(ctx.settings.confirmations, 1)
    try:
        decimals = await t.decimals(t.serv)
        block = await t.w3.eth.block_number
        on_chain = await t.balance(t.serv, t.burn_address)
        # from a little before the first recorded transaction: a reorg may re-mine lower
        by_treasury = 0 if burns.first_block is None else await chain_burned(
            t, max(burns.first_block - depth, 0), block, depth)
    except Exception as exc:  # provider errors of any kind (aiohttp, web3, ChainError)
        raise _unavailable(exc) from exc
    diff = on_chain - totals.total_serv_burned
    recorded = totals.total_serv_burned + burns.in_flight
    problems: list[str] = []
    if not ledger.reconciled:
        off = ledger.revenue - (ledger.swapped + ledger.unallocated + ledger.in_flight)
        problems.append(f"ledger: revenue {ledger.revenue} USD != swapped {ledger.swapped} + "
                        f"unallocated {ledger.unallocated} + in flight {ledger.in_flight} "
                        f"(off by {off} USD)")
    if by_treasury != recorded:
        problems.append(f"chain: the treasury's Transfers of $SERV to the burn address sum to "
                        f"{by_treasury} base units on chain, the records say {recorded} "
                        f"({totals.total_serv_burned} burned + {burns.in_flight} in flight): "
                        f"chain - records = {by_treasury - recorded}")
    if diff < 0:
        problems.append(f"chain: the burn address holds {on_chain} base units, less than the "
                        f"{totals.total_serv_burned} recorded as burned")
    chain_ok = by_treasury == recorded and diff >= 0
    return SummaryOut(
        token=ctx.settings.token_symbol, serv_token=t.serv, burn_address=t.burn_address,
        decimals=decimals, burns=totals.buybacks_burned, total_usd=totals.total_buyback_usd,
        recorded_burned=totals.total_serv_burned,
        recorded_burned_decimal=human(totals.total_serv_burned, decimals),
        chain_burn_address_balance=on_chain,
        chain_burn_address_balance_decimal=human(on_chain, decimals),
        difference=diff, difference_decimal=human(diff, decimals), block_number=block,
        revenue_usd=ledger.revenue, swapped_usd=ledger.swapped,
        unallocated_usd=ledger.unallocated, in_flight_usd=ledger.in_flight,
        chain_burned_by_treasury=by_treasury,
        chain_burned_by_treasury_decimal=human(by_treasury, decimals),
        recorded_in_flight=burns.in_flight, ledger_reconciled=ledger.reconciled,
        chain_reconciled=chain_ok, reconciled=ledger.reconciled and chain_ok,
        disagreements=problems, deposits_credited=deposits.credited,
        deposits_usd=deposits.credited_usd, quote_token=t.quote, treasury_address=t.address)


async def verify(t: Treasury, settings: Settings, bb: Buyback, txs: list[BuybackTx]) -> VerifyOut:
    """Each check with ok + detail; verified only when all pass. Reads only the chain, comparing
    it with what we recorded."""
    checks: list[CheckOut] = []

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append(CheckOut(name=name, ok=ok, detail=detail))
        return ok

    burn = next((x for x in txs if x.kind == "burn" and x.status == "mined"), None)
    swaps = [x for x in txs if x.kind == "swap" and x.status == "mined"]
    try:
        head = await t.w3.eth.block_number
        recorded = check("burn_recorded", bb.status == BuybackStatus.burned and burn is not None,
                         f"buyback status {bb.status}" + (f", burn tx {burn.tx_hash}" if burn else
                                                          ", no mined burn transaction recorded"))
        if burn is None or not recorded:
            return VerifyOut(buyback_id=bb.id, burn_tx_hash=None, verified=False, checks=checks,
                             block_number=head)
        try:
            v = await verify_burn(t.w3, burn.tx_hash, token=t.serv, burn_address=t.burn_address,
                                  expected_amount=bb.serv_burned, expected_from=t.address)
        except (TxNotFound, ValueError):  # unknown, or a stored hash that is no hash
            check("receipt_success", False, f"the chain knows no mined transaction {burn.tx_hash}")
            return VerifyOut(buyback_id=bb.id, burn_tx_hash=burn.tx_hash, verified=False,
                             checks=checks, block_number=head)
        check("receipt_success", v.success, f"receipt status {'1' if v.success else '0'} in "
              f"block {v.block_number}")
        check("transfer_to_burn_address", v.is_burn,
              f"Transfer of {v.amount} $SERV base units from {t.address} to {t.burn_address}"
              if v.is_burn else f"no Transfer of $SERV ({t.serv}) from the treasury {t.address} "
              f"to {t.burn_address} in {burn.tx_hash}")
        check("amount_matches_record", v.amount == bb.serv_burned,
              f"on chain {v.amount}, recorded {bb.serv_burned} (base units)")
        bought, spent, problems = 0, 0, []
        for s in swaps:
            try:
                receipt = await t.w3.eth.get_transaction_receipt(s.tx_hash)  # type: ignore[arg-type]
            except (TransactionNotFound, ValueError):  # unknown, or not a hash at all
                problems.append(f"swap {s.tx_hash} not found")
                continue
            if receipt["status"] != 1:
                problems.append(f"swap {s.tx_hash} reverted")
                continue
            # A swap of the treasury's own stablecoin on the router: not merely $SERV arriving
            # at the treasury (anyone can send that).
            sent_by = to_checksum_address(receipt["from"])
            sent_to = to_checksum_address(receipt["to"]) if receipt["to"] else None
            paid = sum(x.amount for x in transfers(receipt)
                       if x.token == t.quote and x.from_address == t.address)
            if sent_by != t.address or sent_to != t.router.address:
                problems.append(f"{s.tx_hash} is not a transaction of the treasury to the router")
                continue
            if paid != s.amount_in:
                problems.append(f"swap {s.tx_hash} took {paid} stablecoin base units from the "
                                f"treasury, recorded {s.amount_in}")
                continue
            bought += received(receipt, t.serv, t.address)
            spent += paid
        ok = bool(swaps) and not problems and bought == v.amount
        check("swap_output_equals_burn_input", ok,
              "; ".join(problems) if problems else
              f"{len(swaps)} swap(s) paid the treasury {bought} base units on chain; the burn "
              f"moved {v.amount}; recorded received {bb.serv_received}")
        swapped_usd = usd_of(spent, await t.decimals(t.quote))
        check("usd_swapped_matches_swaps", not problems and bb.usd_swapped is not None
              and swapped_usd == bb.usd_swapped,
              f"the swaps took {spent} stablecoin base units ({swapped_usd} USD) from the "
              f"treasury on chain; recorded usd_swapped {bb.usd_swapped} of usd_claimed "
              f"{bb.usd_amount}")
        check("confirmations", v.confirmations >= max(settings.confirmations, 1),
              f"{v.confirmations} confirmation(s), {max(settings.confirmations, 1)} required")
    except AppError:
        raise
    except Exception as exc:  # provider errors of any kind (aiohttp, web3, ChainError)
        raise _unavailable(exc) from exc
    return VerifyOut(buyback_id=bb.id, burn_tx_hash=burn.tx_hash,
                     verified=all(c.ok for c in checks), checks=checks, block_number=head)


async def dry_run(t: Treasury, settings: Settings, usd: Decimal) -> dict[str, Any]:
    """What a buyback of ``usd`` would do now: chunks, expected $SERV, price impact. Sends
    nothing (pure arithmetic on the pool's current reserves, as Uniswap V2 computes it)."""
    try:
        decimals = await t.decimals(t.quote)
        serv_decimals_ = await t.decimals(t.serv)
        amount = int((usd * 10**decimals).to_integral_value(ROUND_FLOOR))
        if amount <= 0:
            raise AppError(f"{usd} USD is less than one base unit of the stablecoin",
                           code="amount_too_small", status=422)
        reserves = await t.router.reserves(t.path)
        balance = await t.balance(t.quote, t.address)
    except AppError:
        raise
    except Exception as exc:  # provider errors of any kind (aiohttp, web3, ChainError)
        raise _unavailable(exc) from exc
    try:
        plan = plan_chunks(amount, reserves, settings.max_price_impact_bps)
    except ChainError as exc:
        raise AppError(str(exc), code="cannot_plan", status=409) from exc
    r_in, r_out = reserves[0]
    chunks, total_out, total_min = [], 0, 0
    for chunk in plan:
        impact = simulate_impact_bps(chunk, [(r_in, r_out)])
        out = amount_out(chunk, r_in, r_out)
        min_out = out * (10_000 - settings.max_slippage_bps) // 10_000
        chunks.append(ChunkOut(amount_in=chunk, expected_out=out, amount_out_min=min_out,
                               price_impact_bps=impact))
        total_out, total_min = total_out + out, total_min + min_out
        r_in, r_out = r_in + chunk, r_out - out
    return dict(quote_token=t.quote, serv_token=t.serv, quote_amount_in=amount,
                expected_serv=total_out, expected_serv_decimal=human(total_out, serv_decimals_),
                amount_out_min_total=total_min,
                price_impact_bps=simulate_impact_bps(amount, reserves), chunks=chunks,
                treasury_quote_balance=balance)
