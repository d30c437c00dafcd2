"""Two runners on one buyback at once (the Redis lock lost, two worker processes): the swaps
never spend more than the buyback's stablecoin and there is one burn."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import pytest

from app.treasury import onchain, runner
from app.treasury.runner import run_buyback
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import USD6, SimulatedCrash, crash_at, treasury_app


async def test_two_runners_planning_the_same_chunk_swap_it_once(any_db, treasury_settings,
                                                               devnet_layout, operator,
                                                               monkeypatch) -> None:
    settings = treasury_settings(any_db, max_price_impact_bps=40, buyback_threshold_usd=Decimal(1))
    async with treasury_app(settings, devnet_layout, operator) as t:
        await t.add_revenue("700", "700", "700")
        start = await t.w3.eth.block_number
        before = await t.balances()
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None
        with pytest.raises(SimulatedCrash):  # chunk 1 mined, then the process died
            await t.run(bid, checkpoint=crash_at("swap:sent", 1))

        # Both runners reach the swap step before either sends, so both size the next chunk
        # from the same recorded remainder; the second signs only after the first one's swap
        # is mined (so with the next nonce: what two unsynchronized processes can do).
        barrier, first_swapped = asyncio.Barrier(2), asyncio.Event()
        arrivals: list[int] = []
        real = runner.ensure_allowance

        async def ensure_allowance_together(*args, **kwargs):  # type: ignore[no-untyped-def]
            out = await real(*args, **kwargs)
            me = len(arrivals)
            arrivals.append(me)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.BrokenBarrierError):
                await asyncio.wait_for(barrier.wait(), 1.0)
            if me == 1:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(first_swapped.wait(), 2.0)
            return out

        async def note(name: str) -> None:
            if name == "swap:sent":
                first_swapped.set()

        monkeypatch.setattr(runner, "ensure_allowance", ensure_allowance_together)
        a, b = await onchain._build(t.ctx), await onchain._build(t.ctx)
        results = await asyncio.gather(run_buyback(t.ctx, bid, treasury=a, checkpoint=note),
                                       run_buyback(t.ctx, bid, treasury=b, checkpoint=note),
                                       return_exceptions=True)
        assert "burned" in results, results
        assert any(isinstance(r, (runner.ConcurrentRunner, runner.BuybackStuck)) for r in results), results
        bb = await t.buyback(bid)
        after = await t.balances()
        kinds = [x["kind"] for x in await t.treasury_txs(start) if x["status"] == 1]
        spent = before["treasury_usd"] - after["treasury_usd"]
        assert spent == bb.quote_amount_in == 2100 * USD6, (spent, kinds, results)
        assert bb.status == "burned" and bb.quote_unspent == 0, (bb.status, bb.failure_reason)
        assert kinds.count("burn") == 1, kinds
        assert after["burned"] - before["burned"] == bb.serv_burned == bb.serv_received
        r = await t.api.client.get(f"/burns/{bid}/verify")
        assert r.json()["verified"] is True, r.json()
