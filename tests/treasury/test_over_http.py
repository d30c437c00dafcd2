"""The same buyback through a JSON-RPC node over HTTP (chain.node, what `make dev` runs): a
crash after the swap is mined, a restart, one swap and one burn, and a verified burn."""

from __future__ import annotations

import pytest

from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import SimulatedCrash, Stopwatch, crash_at, treasury_app


async def test_buyback_over_json_rpc_with_a_crash(chain_node_url, treasury_settings, devnet_layout,
                                                  operator) -> None:
    async with treasury_app(treasury_settings(chain_rpc_url=chain_node_url), devnet_layout, operator) as t:
        await t.add_revenue("123.45")
        start_block = await t.w3.eth.block_number
        before = await t.balances()
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None
        with pytest.raises(SimulatedCrash):
            await t.run(bid, checkpoint=crash_at("swap:sent"))
        t.ctx.treasury = None
        clock = Stopwatch()
        assert await t.run(bid) == "burned"
        print(f"\nMEASURE over HTTP: resume after a crash at swap:sent {clock.seconds:.3f}s")
        bb = await t.buyback(bid)
        after = await t.balances()
        kinds = [x["kind"] for x in await t.treasury_txs(start_block)]
        assert sorted(kinds) == ["approve", "burn", "swap"]
        assert after["burned"] - before["burned"] == bb.serv_burned == bb.serv_received
        assert before["treasury_usd"] - after["treasury_usd"] == 123_450000
        body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
        assert body["verified"] is True, body
