"""The buyback's price check against the pair's TWAP (Uniswap V2 cumulative prices): a pool
pushed just before a buyback makes it wait (and say why), not buy at the pushed price; once the
price is back it completes. Also the TWAP arithmetic against the pair's own numbers."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from eth_account import Account

from app.treasury.runner import Wait
from chain.dex import swap
from chain.oracle import deviation_bps, observe, twap
from chain.tokens import erc20
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import USD6, Stopwatch, TApp, treasury_app

WINDOW = 600
TWAP = dict(twap_window_s=WINDOW, max_twap_deviation_bps=200, buyback_pause_recheck_s=30)


async def _later(t: TApp, seconds: int) -> None:
    head = await t.w3.eth.get_block("latest")
    t.tester.time_travel(int(head["timestamp"]) + seconds)
    t.tester.mine_blocks(1)


def _trader(t: TApp) -> TxSender:
    return TxSender(t.w3, Account.from_key(t.devnet.trader_key), max_fee_wei=1000 * 10**9,
                    poll_interval=0.01)


async def test_a_pushed_pool_makes_the_buyback_wait_then_it_completes(
        treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    async with treasury_app(treasury_settings(**TWAP), devnet_layout, operator) as t:
        d = t.devnet
        router = t.ctx.treasury.router
        path = [d.quote_token, d.serv_token]
        fair = (await router.quote(100 * USD6, path)).amount_out  # what 100 USD buys unpushed
        await t.add_revenue("100")
        bid = await check_buyback_threshold({"app": t.ctx})  # observes the pool, then claims
        assert bid is not None
        await _later(t, WINDOW + 60)
        start = await t.w3.eth.block_number

        # someone pushes the price up just before the buyback's swap
        trader = _trader(t)
        push = await swap(trader, router, 80_000 * USD6, path, max_slippage_bps=9_999,
                          max_price_impact_bps=9_999)
        clock = Stopwatch()
        with pytest.raises(Wait) as waited:
            await t.run(bid)
        print(f"\nMEASURE TWAP check that refused a pushed pool: {clock.seconds:.3f}s")
        assert waited.value.reason == "price_deviation"
        assert [x for x in await t.treasury_txs(start)] == []  # nothing sent, not even approve
        auth = await t.operator_auth()
        events = (await t.api.client.get(f"/buybacks/{bid}", headers=auth)).json()["events"]
        assert events[-1]["kind"] == "price_deviation" and "bps from the" in events[-1]["detail"]
        assert (await t.buyback(bid)).status == "swapping"

        # the price comes back (the pusher sells what it bought); the buyback then completes
        serv = erc20(t.w3, d.serv_token)
        assert await serv.functions.balanceOf(d.trader).call() >= push.received
        await swap(trader, router, push.received, [d.serv_token, d.quote_token],
                   max_slippage_bps=9_999, max_price_impact_bps=9_999)
        await _later(t, 30)
        clock = Stopwatch()
        assert await t.run(bid) == "burned"
        print(f"\nMEASURE buyback with the TWAP check, once the price was back: {clock.seconds:.3f}s")
        bb = await t.buyback(bid)
        # bought at about the unpushed price (the pusher paid two LP fees, the pool kept them)
        assert abs(int(bb.serv_received or 0) - fair) * 10_000 <= fair * 50
        [row] = [r for r in await t.txs(bid) if r.kind == "swap"]
        assert row.amount_out_min is not None and row.amount_out_min <= row.amount_out


async def test_without_price_history_the_buyback_waits_for_the_window(
        treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    async with treasury_app(treasury_settings(**TWAP), devnet_layout, operator) as t:
        await t.add_revenue("100")
        async with t.ctx.db.transaction() as session:
            from app.treasury.repository import start_buyback
            bb = await start_buyback(session, "auto")
        with pytest.raises(Wait) as waited:  # the runner's own observation is the first one
            await t.run(bb.id)
        assert waited.value.reason == "twap_warmup" and waited.value.seconds == WINDOW
        await _later(t, WINDOW + 1)
        assert await t.run(bb.id) == "burned"


async def test_twap_matches_the_pairs_cumulative_prices(tapp: TApp) -> None:
    t = tapp
    d = t.devnet
    pair = await t.ctx.treasury.router.pair(d.quote_token, d.serv_token)
    first = await observe(t.w3, pair)
    quote_is_0 = int(d.quote_token, 16) < int(d.serv_token, 16)
    r_in, r_out = ((first.reserve0, first.reserve1) if quote_is_0
                   else (first.reserve1, first.reserve0))
    await _later(t, 100)
    second = await observe(t.w3, pair)
    average = twap(first, second, quote_is_0)
    # UQ112x112 truncates: the TWAP of a constant price is that price to ~1e-30
    assert abs(average - Fraction(r_out, r_in)) < Fraction(1, 10**20)
    assert deviation_bps(Fraction(r_out, r_in), average) <= 1
    assert deviation_bps(Fraction(110, 100), Fraction(1)) == 1000
    assert Decimal(average.numerator) / Decimal(average.denominator) > 0
