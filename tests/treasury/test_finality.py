"""Finality: a buyback is burned only once its burn is CONFIRMATIONS deep, and a reorg that takes
its transactions away (eth-tester snapshot and revert) sends it back to re-broadcast the same
signed bytes: one swap and one burn on the final chain, never a second payment."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.treasury.runner import Wait
from tests.treasury.conftest import DEPTH, TApp


def test_confirmations_default_to_a_mainnet_safe_depth() -> None:
    assert Settings.model_fields["confirmations"].default == 12


async def _final_chain(t: TApp, since: int) -> list[str]:
    return [x["kind"] for x in await t.treasury_txs(since) if x["status"] == 1]


async def test_burned_only_at_depth_and_a_reorg_rebroadcasts_the_same_bytes(deep) -> None:  # type: ignore[no-untyped-def]
    t, bid, start = deep
    before = await t.balances()
    snapshot = t.tester.take_snapshot()

    with pytest.raises(Wait) as waited:  # approve + swap mined, 1 confirmation each
        await t.run(bid)
    assert waited.value.reason.startswith("confirmations: the swaps")
    first = {r.kind: r.tx_hash for r in await t.txs(bid)}
    assert await _final_chain(t, start) == ["approve", "swap"]

    t.tester.revert_to_snapshot(snapshot)  # a reorg: both blocks are gone
    assert await _final_chain(t, start) == []
    with pytest.raises(Wait):
        await t.run(bid)  # notices, re-broadcasts the stored bytes, waits for depth again
    assert {r.kind: r.tx_hash for r in await t.txs(bid)} == first  # no new signature
    assert await _final_chain(t, start) == ["approve", "swap"]
    auth = await t.operator_auth()
    kinds = [e["kind"] for e in (await t.api.client.get(
        f"/buybacks/{bid}", headers=auth)).json()["events"]]
    assert kinds.count("reorg") == 2

    t.tester.mine_blocks(DEPTH)
    with pytest.raises(Wait) as waited:  # the burn is mined, not yet deep
        await t.run(bid)
    assert waited.value.reason.startswith("confirmations: the burn")
    assert (await t.buyback(bid)).status == "burning"
    t.tester.mine_blocks(DEPTH - 1)
    assert await t.run(bid) == "burned"

    kinds = await _final_chain(t, start)
    assert sorted(kinds) == ["approve", "burn", "swap"]  # paid once, burned once
    bb = await t.buyback(bid)
    after = await t.balances()
    assert before["treasury_usd"] - after["treasury_usd"] == bb.quote_amount_in
    assert after["burned"] - before["burned"] == bb.serv_burned
    body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    assert body["verified"] is True, body


async def test_a_reorged_burn_is_rebroadcast_not_signed_again(deep) -> None:  # type: ignore[no-untyped-def]
    t, bid, start = deep
    with pytest.raises(Wait):
        await t.run(bid)
    t.tester.mine_blocks(DEPTH)
    snapshot = t.tester.take_snapshot()
    with pytest.raises(Wait):  # burn mined at depth 1
        await t.run(bid)
    [burn] = [r for r in await t.txs(bid) if r.kind == "burn"]
    t.tester.revert_to_snapshot(snapshot)
    with pytest.raises(Wait):
        await t.run(bid)
    assert [r.tx_hash for r in await t.txs(bid) if r.kind == "burn"] == [burn.tx_hash]
    t.tester.mine_blocks(DEPTH)
    assert await t.run(bid) == "burned"
    assert sorted(await _final_chain(t, start)) == ["approve", "burn", "swap"]
