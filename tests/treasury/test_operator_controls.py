"""Operator controls: pause and resume buybacks; cancel a stuck one only when the chain proves
none of its transactions can still be mined, releasing its revenue."""

from __future__ import annotations

import pytest
from eth_account import Account

from app.treasury.runner import BuybackStuck, Wait
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import SimulatedCrash, TApp, crash_at


async def test_pause_stops_new_and_active_buybacks_until_resumed(tapp: TApp) -> None:
    t = tapp
    auth = await t.operator_auth()
    await t.add_revenue("150")
    r = await t.api.client.post("/treasury/pause", json={"reason": "pool looks odd"},
                                headers=auth)
    assert r.status_code == 200 and r.json()["paused"] is True
    assert r.json()["changed_by"] == t.operator.address
    assert await check_buyback_threshold({"app": t.ctx}) is None  # nothing starts
    assert (await t.api.client.get("/treasury/controls", headers=auth)).json()["reason"] == \
        "pool looks odd"
    # an operator may still trigger one by hand; it waits while paused, sending nothing
    bid = (await t.api.client.post("/trigger-buyback", json={}, headers=auth)).json()["buyback_id"]
    start = await t.w3.eth.block_number
    with pytest.raises(Wait) as waited:
        await t.run(bid)
    assert waited.value.reason.startswith("paused by an operator")
    assert await t.treasury_txs(start) == []
    r = await t.api.client.post("/treasury/resume", headers=auth)
    assert r.status_code == 200 and r.json()["paused"] is False
    assert await t.run(bid) == "burned"
    assert (await t.api.client.post("/treasury/pause", json={})).status_code == 401


async def test_cancel_only_when_no_transaction_can_still_be_mined(tapp: TApp) -> None:
    t = tapp
    auth = await t.operator_auth()
    await t.add_revenue("80", "20")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None
    with pytest.raises(SimulatedCrash):  # the swap is signed and stored, never broadcast
        await t.run(bid, checkpoint=crash_at("swap:prepared"))
    t.ctx.treasury = None

    r = await t.api.client.post(f"/buybacks/{bid}/cancel", headers=auth)
    assert r.status_code == 409 and r.json()["error"] == "buyback_not_cancellable"
    assert "can still be mined" in r.json()["detail"]  # its nonce is free: re-broadcastable

    # someone (an operator by hand) uses that nonce for another transaction: the stored swap
    # can never be mined now, and the runner stops rather than guess
    treasury = TxSender(t.w3, Account.from_key(t.devnet.treasury_key), max_fee_wei=1000 * 10**9,
                        poll_interval=0.01)
    await treasury.send({"to": t.devnet.treasury, "value": 0})
    with pytest.raises(BuybackStuck):
        await t.run(bid)

    r = await t.api.client.post(f"/buybacks/{bid}/cancel", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["revenue_events_released"] == 2
    assert all(e.buyback_id is None for e in await t.events())
    one = (await t.api.client.get(f"/buybacks/{bid}", headers=auth)).json()
    assert one["active"] is False and one["events"][-1]["kind"] == "cancelled"
    assert {x["status"] for x in one["transactions"] if x["kind"] == "swap"} == {"superseded"}
    s = (await t.api.client.get("/burns/summary")).json()
    assert (s["unallocated_usd"], s["reconciled"]) == ("100.000000", True)
    # the slot is free: the released revenue is bought back by the next buyback
    nxt = await check_buyback_threshold({"app": t.ctx})
    assert nxt is not None and nxt != bid and await t.run(nxt) == "burned"
    assert (await t.api.client.post(f"/buybacks/{bid}/cancel", headers=auth)).status_code == 409


async def test_a_buyback_with_mined_swaps_cannot_be_cancelled(tapp: TApp) -> None:
    t = tapp
    auth = await t.operator_auth()
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None
    with pytest.raises(SimulatedCrash):
        await t.run(bid, checkpoint=crash_at("swapped"))
    r = await t.api.client.post(f"/buybacks/{bid}/cancel", headers=auth)
    assert r.status_code == 409 and "must be burned" in r.json()["detail"]
    t.ctx.treasury = None
    assert await t.run(bid) == "burned"
