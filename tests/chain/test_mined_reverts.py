"""A transaction that reverts on chain is replayed for its reason. The reason must survive what
only the mined block shows: a trade earlier in the same block, the block's own timestamp."""

from __future__ import annotations

import pytest

from chain.dex import deadline_in
from chain.errors import DeadlineExpired, SlippageExceeded
from chain.tokens import erc20
from tests.chain.conftest import Chain

USD = 10**6


async def approve_router(chain: Chain) -> None:
    d, router = chain.devnet, chain.router
    usd = erc20(chain.w3, d.quote_token)
    for sender in (chain.treasury, chain.trader):
        await sender.send({"to": usd.address, "data": usd.encode_abi("approve", [router.address, 10**15])})


async def test_front_run_in_the_same_block_maps_to_slippage(chain: Chain) -> None:
    d = chain.devnet
    treasury, trader, router = chain.treasury, chain.trader, chain.router
    path = [d.quote_token, d.serv_token]
    await approve_router(chain)
    quote = await router.quote(1_000 * USD, path)
    deadline = await deadline_in(chain.w3, 300)
    front = await trader.prepare(router.swap_tx(20_000 * USD, 1, path, d.trader, deadline))
    ours = await treasury.prepare(router.swap_tx(1_000 * USD, quote.amount_out_min(50), path, d.treasury, deadline))
    chain.tester.disable_auto_mine_transactions()
    try:
        await trader.broadcast(front)
        await treasury.broadcast(ours)
        chain.tester.mine_blocks(1)  # both in one block, the front-run first
    finally:
        chain.tester.enable_auto_mine_transactions()
    with pytest.raises(SlippageExceeded) as info:
        await treasury.wait_or_replace(ours, timeout=2)
    assert info.value.tx_hash == ours.tx_hash


async def test_deadline_passed_at_the_mined_block_maps_to_deadline_expired(chain: Chain) -> None:
    d = chain.devnet
    treasury, router = chain.treasury, chain.router
    path = [d.quote_token, d.serv_token]
    await approve_router(chain)
    deadline = (await chain.w3.eth.get_block("latest"))["timestamp"] + 100
    ours = await treasury.prepare(router.swap_tx(1_000 * USD, 1, path, d.treasury, deadline))
    chain.tester.disable_auto_mine_transactions()
    try:
        await treasury.broadcast(ours)
        chain.tester.time_travel(deadline + 1)  # ours is mined 1 s late; its parent was in time
        chain.tester.mine_blocks(1)
    finally:
        chain.tester.enable_auto_mine_transactions()
    receipt = await treasury.wait_for_receipt(ours.tx_hash, timeout=2)
    parent = await chain.w3.eth.get_block(receipt["blockNumber"] - 1)
    assert receipt["status"] == 0 and parent["timestamp"] <= deadline
    with pytest.raises(DeadlineExpired) as info:
        await treasury.raise_for_status(receipt)
    assert info.value.tx_hash == ours.tx_hash
