"""Claiming revenue: one active buyback under 50 concurrent triggers and the cron (SQLite and
PostgreSQL), revenue that arrives mid-buyback goes to the next one, failures give revenue back."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import func, select

from app.models import Buyback, BuybackStatus
from chain.dex import swap
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import USD6, TApp, treasury_app


async def test_50_triggers_and_the_cron_at_once_start_one_buyback(any_db, treasury_settings,
                                                                 devnet_layout, operator) -> None:
    async with treasury_app(treasury_settings(any_db), devnet_layout, operator) as t:
        await t.add_revenue(*["3.000001"] * 40)
        auth = await t.operator_auth()

        async def trigger():  # type: ignore[no-untyped-def]
            return await t.api.client.post("/trigger-buyback", json={}, headers=auth)

        results = await asyncio.gather(*[trigger() for _ in range(50)],
                                       check_buyback_threshold({"app": t.ctx}))
        answers, cron = results[:-1], results[-1]
        codes = sorted(r.status_code for r in answers)
        async with t.ctx.db.sessions() as session:
            rows = list((await session.execute(select(Buyback))).scalars())
        assert len(rows) == 1, codes
        [bb] = rows
        accepted = [r for r in answers if r.status_code == 202]
        assert len(accepted) == (0 if bb.triggered_by == "auto" else 1), codes
        assert cron in (None, bb.id)  # it started it, lost the race, or re-enqueued it
        assert all(r.status_code == 409 and r.json()["error"] in {"buyback_active",
                   "no_unallocated_revenue"} for r in answers if r.status_code != 202)
        if accepted:
            assert accepted[0].json() == {"buyback_id": bb.id, "status": "planned",
                                          "usd_amount": "120.000040", "revenue_events": 40}
            assert bb.triggered_by == operator.address
        assert bb.usd_amount == Decimal("120.000040")
        assert all(e.buyback_id == bb.id for e in await t.events())
        busy = await trigger()
        assert busy.status_code == 409 and busy.json()["buyback_id"] == bb.id


async def test_revenue_arriving_during_a_buyback_goes_into_the_next(tapp_any: TApp) -> None:
    t = tapp_any
    first = await t.add_revenue("60", "50")
    bid = await check_buyback_threshold({"app": t.ctx})
    late: list[int] = []

    async def revenue_meanwhile(name: str) -> None:
        if name in ("swap:prepared", "burn:sent"):
            late.extend(await t.add_revenue("70.000001"))

    assert bid is not None and await t.run(bid, checkpoint=revenue_meanwhile) == "burned"
    events = {e.id: e for e in await t.events()}
    assert {i for i, e in events.items() if e.buyback_id == bid} == set(first)
    assert all(events[i].buyback_id is None for i in late) and len(late) == 2
    assert (await t.buyback(bid)).usd_amount == Decimal("110")
    nxt = await check_buyback_threshold({"app": t.ctx})
    assert nxt is not None and nxt != bid
    assert (await t.buyback(nxt)).usd_amount == Decimal("140.000002")
    assert await t.run(nxt) == "burned"
    assert all(e.buyback_id is not None for e in await t.events())


async def test_slippage_fails_the_buyback_and_returns_its_revenue(tapp_any: TApp) -> None:
    """Quoted, signed, then someone else's big buy lands first: our swap reverts on chain with
    INSUFFICIENT_OUTPUT_AMOUNT; the buyback fails, its revenue is unallocated, nothing burned."""
    t = tapp_any
    d = t.devnet
    await t.add_revenue("500")
    bid = await check_buyback_threshold({"app": t.ctx})
    before = await t.balances()
    trader = TxSender(t.w3, __import__("eth_account").Account.from_key(d.trader_key),
                      max_fee_wei=1000 * 10**9, poll_interval=0.01)

    async def front_run(name: str) -> None:
        if name == "swap:prepared":
            await swap(trader, t.ctx.treasury.router, 50_000 * USD6,
                       [d.quote_token, d.serv_token], max_slippage_bps=9_999,
                       max_price_impact_bps=9_999)

    assert bid is not None and await t.run(bid, checkpoint=front_run) == "failed"
    bb = await t.buyback(bid)
    assert bb.active_slot is None and "SlippageExceeded" in (bb.failure_reason or "")
    assert "INSUFFICIENT_OUTPUT_AMOUNT" in (bb.failure_reason or "")
    assert all(e.buyback_id is None for e in await t.events())
    after = await t.balances()
    assert after["burned"] == before["burned"] and after["treasury_usd"] == before["treasury_usd"]
    rows = await t.txs(bid)
    assert [r.status for r in rows if r.kind == "swap"] == ["reverted"]
    body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    assert body["verified"] is False and [c["name"] for c in body["checks"]] == ["burn_recorded"]
    # the revenue is back: the next check starts a new buyback with it, which succeeds
    nxt = await check_buyback_threshold({"app": t.ctx})
    assert nxt is not None and nxt != bid and await t.run(nxt) == "burned"
    assert (await t.buyback(nxt)).usd_amount == Decimal("500")


async def test_an_empty_treasury_fails_before_sending_anything(tapp: TApp) -> None:
    t = tapp
    await t.add_revenue("250000")  # the devnet treasury holds 100000 DevUSD
    bid = await check_buyback_threshold({"app": t.ctx})
    block = await t.w3.eth.block_number
    assert bid is not None and await t.run(bid) == "failed"
    bb = await t.buyback(bid)
    assert "InsufficientBalance" in (bb.failure_reason or "")
    assert all(e.buyback_id is None for e in await t.events())
    assert await t.treasury_txs(block) == []
    async with t.ctx.db.sessions() as session:
        active = (await session.execute(select(func.count()).select_from(Buyback).where(
            Buyback.status != BuybackStatus.failed))).scalar_one()
    assert active == 0


async def test_slippage_after_some_chunks_burns_what_was_bought(treasury_settings, devnet_layout,
                                                                operator) -> None:
    """Chunk 2 of 3 reverts: chunk 1's $SERV is still burned, the unswapped stablecoin is
    recorded as quote_unspent and the reason starts with "partial:"."""
    settings = treasury_settings(max_price_impact_bps=40, buyback_threshold_usd=Decimal(1))
    async with treasury_app(settings, devnet_layout, operator) as t:
        d = t.devnet
        await t.add_revenue("2100")
        bid = await check_buyback_threshold({"app": t.ctx})
        before = await t.balances()
        trader = TxSender(t.w3, __import__("eth_account").Account.from_key(d.trader_key),
                          max_fee_wei=1000 * 10**9, poll_interval=0.01)
        seen = {"n": 0}

        async def front_run_second(name: str) -> None:
            if name == "swap:prepared":
                seen["n"] += 1
                if seen["n"] == 2:
                    await swap(trader, t.ctx.treasury.router, 50_000 * USD6,
                               [d.quote_token, d.serv_token], max_slippage_bps=9_999,
                               max_price_impact_bps=9_999)

        assert bid is not None and await t.run(bid, checkpoint=front_run_second) == "burned"
        bb = await t.buyback(bid)
        rows = await t.txs(bid)
        [mined] = [r for r in rows if r.kind == "swap" and r.status == "mined"]
        assert (bb.failure_reason or "").startswith("partial:")
        assert bb.quote_unspent == bb.quote_amount_in - mined.amount_in > 0
        after = await t.balances()
        assert after["burned"] - before["burned"] == bb.serv_burned == mined.amount_out
        assert before["treasury_usd"] - after["treasury_usd"] == mined.amount_in
        r = await t.api.client.get(f"/burns/{bid}/verify")
        assert r.json()["verified"] is True
