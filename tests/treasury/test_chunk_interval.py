"""BUYBACK_CHUNK_INTERVAL_S: a chunked buyback waits between chunks, so arbitrage can restore
the pool price, and the wait does not hold the worker (the run ends; the job is deferred)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from arq import Retry
from eth_account import Account

from app.treasury.runner import ChunkPause
from chain.dex import amount_out, plan_chunks, swap
from chain.tx import TxSender
from jobs import treasury_tasks
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import treasury_app

INTERVAL = 2.0


async def test_the_next_chunk_waits_and_quotes_the_recovered_price(treasury_settings, devnet_layout,
                                                                    operator) -> None:
    # 40 bps impact limit: ~1000 USD per chunk on the devnet pool, so 2500.5 USD is 3 chunks
    settings = treasury_settings(max_price_impact_bps=40, buyback_threshold_usd=Decimal(1),
                                 buyback_chunk_interval_s=INTERVAL)
    async with treasury_app(settings, devnet_layout, operator) as t:
        d = t.devnet
        tr = t.ctx.treasury
        await t.add_revenue("1250", "1250", "0.5")
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None

        with pytest.raises(ChunkPause) as first:
            await t.run(bid)
        assert 0 < first.value.seconds <= INTERVAL
        [chunk1] = [x for x in await t.txs(bid) if x.kind == "swap"]
        assert chunk1.status == "mined" and (await t.buyback(bid)).status == "swapping"
        after_chunk1 = (await tr.router.reserves(tr.path))[0]

        # too early: the run ends again and sends nothing
        nonce = await t.w3.eth.get_transaction_count(d.treasury)
        with pytest.raises(ChunkPause):
            await t.run(bid)
        assert await t.w3.eth.get_transaction_count(d.treasury) == nonce
        assert len([x for x in await t.txs(bid) if x.kind == "swap"]) == 1

        # the worker is not held: the task ends with a deferred retry of the same job
        with pytest.raises(Retry) as retry:
            await treasury_tasks.run_buyback({"app": t.ctx, "job_try": 1}, bid)
        assert 0 < retry.value.defer_score <= INTERVAL * 1000

        # meanwhile an arbitrageur sells back the $SERV the first chunk bought
        trader = TxSender(t.w3, Account.from_key(d.trader_key), max_fee_wei=1000 * 10**9,
                          poll_interval=0.01)
        await swap(trader, tr.router, int(chunk1.amount_out), [d.serv_token, d.quote_token],
                   max_slippage_bps=9_999, max_price_impact_bps=10_000, confirmations=1)
        recovered = (await tr.router.reserves(tr.path))[0]
        assert recovered[1] > after_chunk1[1]  # more $SERV per USD again

        await asyncio.sleep(INTERVAL)
        with pytest.raises(ChunkPause):  # chunk 2 now, then a pause before chunk 3
            await t.run(bid)
        chunk2 = [x for x in await t.txs(bid) if x.kind == "swap"][1]
        assert chunk2.status == "mined"
        assert (chunk2.mined_at - chunk1.mined_at).total_seconds() >= INTERVAL
        remaining = 2500_500000 - int(chunk1.amount_in)
        expected_in = plan_chunks(remaining, [recovered], 40)[0]
        assert chunk2.amount_in == expected_in
        quoted = amount_out(expected_in, *recovered)
        assert chunk2.amount_out == quoted  # nothing else traded: paid exactly the quote
        assert chunk2.amount_out_min == quoted * (10_000 - settings.max_slippage_bps) // 10_000
        assert quoted > amount_out(expected_in, *after_chunk1)  # the recovery was used

        status = None
        while status is None:
            try:
                status = await t.run(bid)
            except ChunkPause as pause:
                await asyncio.sleep(pause.seconds)
        assert status == "burned"
        swaps = [x for x in await t.txs(bid) if x.kind == "swap"]
        assert len(swaps) == 3 and sum(x.amount_in for x in swaps) == 2500_500000
        bb = await t.buyback(bid)
        assert bb.serv_burned == bb.serv_received == sum(x.amount_out for x in swaps)
