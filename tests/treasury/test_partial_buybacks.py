"""A partly done buyback tells the truth: usd_swapped (from the chain) beside usd_claimed, the
unspent revenue back to unallocated as one ledger entry and bought back next time, and
/burns/summary reconciling revenue = swapped + unallocated + in flight to the micro-dollar."""

from __future__ import annotations

from decimal import Decimal

from eth_account import Account
from sqlalchemy import select

from app.models import CARRYOVER_SOURCE, RevenueEvent
from chain.dex import swap
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import USD6, TApp, treasury_app


def front_run(t: TApp, nth: int):  # type: ignore[no-untyped-def]
    """At the nth swap:prepared (signed, not yet broadcast), a trader buys first: the swap's
    amountOutMin is no longer met and it reverts on chain."""
    d = t.devnet
    trader = TxSender(t.w3, Account.from_key(d.trader_key), max_fee_wei=1000 * 10**9,
                      poll_interval=0.01)
    seen = {"n": 0}

    async def checkpoint(name: str) -> None:
        if name == "swap:prepared":
            seen["n"] += 1
            if seen["n"] == nth:
                await swap(trader, t.ctx.treasury.router, 50_000 * USD6,
                           [d.quote_token, d.serv_token], max_slippage_bps=9_999,
                           max_price_impact_bps=9_999)

    return checkpoint


async def summary(t: TApp) -> dict[str, object]:
    r = await t.api.client.get("/burns/summary")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_a_partial_buyback_records_what_it_swapped_and_gives_the_rest_back(
        any_db, treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    settings = treasury_settings(any_db, max_price_impact_bps=40, buyback_threshold_usd=Decimal(1))
    async with treasury_app(settings, devnet_layout, operator) as t:
        await t.add_revenue("700.000001", "1399.999999")
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None and await t.run(bid, checkpoint=front_run(t, 2)) == "burned"
        bb = await t.buyback(bid)
        [mined] = [r for r in await t.txs(bid) if r.kind == "swap" and r.status == "mined"]
        assert bb.usd_amount == Decimal("2100")
        assert bb.usd_swapped == Decimal(mined.amount_in) / USD6 == Decimal("700")
        # exactly one carry-over ledger entry, unallocated, naming the buyback
        async with t.ctx.db.sessions() as session:
            carried = list((await session.execute(select(RevenueEvent).where(
                RevenueEvent.source == CARRYOVER_SOURCE))).scalars())
        assert [(c.amount_usd, c.buyback_id, c.carried_from_buyback_id, c.idle_job_id)
                for c in carried] == [(Decimal("1400"), None, bid, None)]

        auth = await t.operator_auth()
        one = (await t.api.client.get(f"/buybacks/{bid}", headers=auth)).json()
        assert (one["usd_claimed"], one["usd_swapped"], one["usd_returned"]) == (
            "2100.000000", "700.000000", "1400.000000")
        assert any(e["kind"] == "carry_over" for e in one["events"])
        [item] = (await t.api.client.get("/burns")).json()["items"]
        assert (item["usd_claimed"], item["usd_swapped"], item["partial"]) == (
            "2100.000000", "700.000000", True)
        checks = {c["name"]: c for c in
                  (await t.api.client.get(f"/burns/{bid}/verify")).json()["checks"]}
        assert checks["usd_swapped_matches_swaps"]["ok"], checks
        assert all(c["ok"] for c in checks.values())

        s = await summary(t)
        assert (s["revenue_usd"], s["swapped_usd"], s["unallocated_usd"], s["in_flight_usd"],
                s["reconciled"]) == ("2100.000000", "700.000000", "1400.000000", "0.000000", True)
        m = (await t.api.client.get("/metrics")).json()
        assert m["runpod_income_usd"] == "2100.000000"  # a carry-over is not new revenue
        assert m["unallocated_revenue_usd"] == "1400.000000"

        # the next buyback claims the carry-over (and new revenue) and buys it back
        await t.add_revenue("0.5")
        nxt = await check_buyback_threshold({"app": t.ctx})
        assert nxt is not None and nxt != bid
        s = await summary(t)
        assert (s["in_flight_usd"], s["unallocated_usd"], s["reconciled"]) == (
            "1400.500000", "0.000000", True)
        assert await t.run(nxt) == "burned"
        nb = await t.buyback(nxt)
        assert nb.usd_amount == nb.usd_swapped == Decimal("1400.5")
        s = await summary(t)
        assert (s["revenue_usd"], s["swapped_usd"], s["unallocated_usd"], s["in_flight_usd"],
                s["reconciled"]) == ("2100.500000", "2100.500000", "0.000000", "0.000000", True)
        assert s["total_usd"] == "2100.500000"  # what was swapped, not what was claimed twice


async def test_a_failed_buyback_reconciles_too(tapp_any: TApp) -> None:
    """Nothing swapped (the very first chunk is front-run): usd_swapped 0, the events are
    released (no carry-over), and the ledger still adds up (SQLite and PostgreSQL)."""
    t = tapp_any
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid, checkpoint=front_run(t, 1)) == "failed"
    bb = await t.buyback(bid)
    assert bb.usd_swapped == Decimal(0)
    s = await summary(t)
    assert (s["revenue_usd"], s["swapped_usd"], s["unallocated_usd"], s["reconciled"]) == (
        "100.000000", "0.000000", "100.000000", True)
