"""PRIVATE_TX_RPC_URL: the treasury's signed approve, swap and burn go only to the private relay
(recorded there, forwarded to the chain); CHAIN_RPC_URL is only read, never sent a transaction."""

from __future__ import annotations

import pytest

from jobs.treasury_tasks import check_buyback_threshold
from tests.support.rpc_relay import running_relay
from tests.treasury.conftest import SimulatedCrash, crash_at, treasury_app


async def test_signed_transactions_go_only_to_the_private_endpoint(
        chain_node_url, treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    with running_relay(chain_node_url) as (public_url, public), \
            running_relay(chain_node_url) as (private_url, private):
        settings = treasury_settings(chain_rpc_url=public_url, private_tx_rpc_url=private_url)
        async with treasury_app(settings, devnet_layout, operator) as t:
            public.clear()  # the devnet deployment went through the public URL
            await t.add_revenue("142")
            bid = await check_buyback_threshold({"app": t.ctx})
            assert bid is not None
            with pytest.raises(SimulatedCrash):  # stored, not sent: the resume re-broadcasts it
                await t.run(bid, checkpoint=crash_at("burn:prepared"))
            await t.ctx.treasury.aclose()
            t.ctx.treasury = None  # a restart: a new Treasury
            assert await t.run(bid) == "burned"
            rows = await t.txs(bid)
            assert sorted(r.kind for r in rows) == ["approve", "burn", "swap"]
            assert sorted(private.raw_transactions()) == sorted(r.raw_tx for r in rows)
            assert set(private.methods()) == {"eth_sendRawTransaction"}
            assert "eth_sendRawTransaction" not in public.methods()
            assert "eth_getTransactionReceipt" in public.methods()  # reads stay public
            body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
            assert body["verified"] is True, body
