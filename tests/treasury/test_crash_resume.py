"""A crash at any step of a buyback, then a restart: exactly one swap per chunk and one burn on
chain, balances exact to the wei. The 'process' dies by an exception at a named checkpoint (or
by cancellation while it waits for a receipt); the restart builds a new Treasury and sender."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from app.models import BuybackStatus
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import USD6, SimulatedCrash, Stopwatch, TApp, crash_at, treasury_app

# 40 bps impact limit: 2100 USD is bought in 3 chunks on the devnet pool
CHUNKED = dict(max_price_impact_bps=40, buyback_threshold_usd=Decimal(1))
POINTS = [("approve:prepared", 1), ("swap:prepared", 1), ("swap:sent", 1),
          ("swap:prepared", 2), ("swap:sent", 3), ("swapped", 1), ("burn:prepared", 1),
          ("burn:sent", 1)]


async def _restart(t: TApp) -> None:
    t.ctx.treasury = None  # a new process: new Treasury, new sender, no memory


async def _assert_exactly_once(t: TApp, bid: int, start_block: int, before: dict[str, int],
                               chunks: int) -> None:
    bb = await t.buyback(bid)
    assert bb.status == BuybackStatus.burned, bb.failure_reason
    on_chain = await t.treasury_txs(start_block)
    kinds = [x["kind"] for x in on_chain if x["status"] == 1]
    assert kinds.count("swap") == chunks and kinds.count("burn") == 1, kinds
    assert kinds.count("approve") == 1 and len(on_chain) == chunks + 2
    rows = await t.txs(bid)
    assert sorted(x["hash"] for x in on_chain) == sorted(r.tx_hash for r in rows if r.status == "mined")
    assert {r.status for r in rows} <= {"mined", "superseded"}
    after = await t.balances()
    assert before["treasury_usd"] - after["treasury_usd"] == bb.quote_amount_in == int(bb.usd_amount * USD6)
    assert after["burned"] - before["burned"] == bb.serv_burned == bb.serv_received
    assert after["treasury_serv"] == before["treasury_serv"]
    r = await t.api.client.get(f"/burns/{bid}/verify")
    assert r.json()["verified"] is True, r.json()


@pytest.mark.parametrize("point,nth", POINTS, ids=[f"{p}#{n}" for p, n in POINTS])
async def test_crash_then_resume_swaps_and_burns_once(point, nth, treasury_settings, devnet_layout,
                                                      operator) -> None:
    async with treasury_app(treasury_settings(**CHUNKED), devnet_layout, operator) as t:
        await t.add_revenue("700", "700", "700")
        start_block = await t.w3.eth.block_number
        before = await t.balances()
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None
        with pytest.raises(SimulatedCrash):
            await t.run(bid, checkpoint=crash_at(point, nth))
        assert (await t.buyback(bid)).active_slot == 1
        await _restart(t)
        clock = Stopwatch()
        assert await t.run(bid) == "burned"
        print(f"\nMEASURE resume after crash at {point}#{nth}: {clock.seconds:.3f}s")
        await _assert_exactly_once(t, bid, start_block, before, chunks=3)
        # a third run (say arq retried a job that had in fact finished) does nothing
        assert await t.run(bid) == "burned"
        assert len(await t.treasury_txs(start_block)) == 5


async def test_crash_while_the_swap_is_pending_resumes_by_waiting(treasury_settings, devnet_layout,
                                                                   operator) -> None:
    """Broadcast but not mined when the process dies: the restart finds the hash pending, waits
    for it instead of sending another swap, then burns."""
    async with treasury_app(treasury_settings(), devnet_layout, operator) as t:
        await t.add_revenue("150")
        start_block = await t.w3.eth.block_number
        before = await t.balances()
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None

        async def hold_swap(name: str) -> None:
            if name == "swap:prepared":
                t.tester.disable_auto_mine_transactions()

        task = asyncio.create_task(t.run(bid, checkpoint=hold_swap))
        for _ in range(200):
            rows = [r for r in await t.txs(bid) if r.kind == "swap"]
            if rows and (await t.w3.eth.get_transaction(rows[0].tx_hash)) is not None:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        task.cancel()  # the process dies while waiting for the receipt
        with pytest.raises(asyncio.CancelledError):
            await task
        await _restart(t)

        async def mine_later() -> None:
            await asyncio.sleep(0.3)
            t.tester.enable_auto_mine_transactions()

        miner = asyncio.create_task(mine_later())
        clock = Stopwatch()
        assert await t.run(bid) == "burned"
        await miner
        print(f"\nMEASURE resume with a pending swap: {clock.seconds:.3f}s (0.3s of it waiting to be mined)")
        await _assert_exactly_once(t, bid, start_block, before, chunks=1)


async def test_crash_and_resume_on_postgresql(treasury_settings, devnet_layout, operator,
                                              postgres_db) -> None:
    async with treasury_app(treasury_settings(postgres_db, **CHUNKED), devnet_layout, operator) as t:
        await t.add_revenue("2100")
        start_block = await t.w3.eth.block_number
        before = await t.balances()
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None
        with pytest.raises(SimulatedCrash):
            await t.run(bid, checkpoint=crash_at("swap:sent", 2))
        await _restart(t)
        with pytest.raises(SimulatedCrash):
            await t.run(bid, checkpoint=crash_at("burn:sent"))
        await _restart(t)
        assert await t.run(bid) == "burned"
        await _assert_exactly_once(t, bid, start_block, before, chunks=3)


async def test_a_swap_signed_before_a_long_outage_expires_and_the_revenue_comes_back(
        tapp) -> None:  # type: ignore[no-untyped-def]
    """Crash after the swap was stored, restart after its deadline: the stored bytes are
    re-broadcast (never re-signed), revert with EXPIRED, the buyback fails and its revenue is
    unallocated again for the next one. Nothing was swapped or burned."""
    t = tapp
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    before = await t.balances()
    with pytest.raises(SimulatedCrash):
        await t.run(bid, checkpoint=crash_at("swap:prepared"))
    head = await t.w3.eth.get_block("latest")
    t.tester.time_travel(int(head["timestamp"]) + 3600)
    await _restart(t)
    assert await t.run(bid) == "failed"
    bb = await t.buyback(bid)
    assert "DeadlineExpired" in (bb.failure_reason or ""), bb.failure_reason
    assert [r.status for r in await t.txs(bid) if r.kind == "swap"] == ["reverted"]
    assert all(e.buyback_id is None for e in await t.events())
    after = await t.balances()
    assert after == before
    nxt = await check_buyback_threshold({"app": t.ctx})
    assert nxt is not None and await t.run(nxt) == "burned"
