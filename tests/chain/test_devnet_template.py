"""The shared devnet (tests/support/devnet_template.py): a replay is what a fresh deploy is (same
transactions, blocks, addresses, balances, gas), with blocks stamped now rather than when the
template was deployed (the treasury's waits follow the chain's recent block timestamps)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

import chain.devnet as devnet_module
from chain.client import make_web3
from chain.devnet import deploy_devnet
from chain.tokens import erc20
from chain.tx import block_time
from tests.chain.conftest import require_contracts
from tests.support import devnet_template as dt


async def snapshot_of(w3, d) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What tests can see of a devnet: every block's transaction and gas, the accounts and the
    pool (all but the timestamps)."""
    head = await w3.eth.block_number
    blocks = []
    for n in range(1, head + 1):
        block = await w3.eth.get_block(n)
        txs = []
        for h in block["transactions"]:
            tx, r = await w3.eth.get_transaction(h), await w3.eth.get_transaction_receipt(h)
            # addLiquidity's calldata holds a deadline (its deploy's time + 600 s): its hash
            # differs between any two deploys
            same_every_deploy = bytes(h) if tx["to"] != d.router else None
            txs.append((same_every_deploy, tx["from"], tx["to"], tx["nonce"], r["gasUsed"],
                        r["status"], r["contractAddress"]))
        blocks.append(txs)
    holders = [d.deployer, d.treasury, d.trader, d.pair, d.burn_address]
    return {
        "head": head,
        "blocks": blocks,
        "ether": [await w3.eth.get_balance(a) for a in holders],
        "nonces": [await w3.eth.get_transaction_count(a) for a in holders],
        "tokens": [await erc20(w3, t).functions.balanceOf(a).call()
                   for t in (d.serv_token, d.quote_token) for a in holders],
        "code": [len(await w3.eth.get_code(a)) for a in (d.serv_token, d.quote_token, d.weth,
                                                          d.factory, d.router, d.pair)],
    }


async def test_a_replay_is_what_a_fresh_deploy_is(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    require_contracts()
    # Both deploys take one addLiquidity deadline (an hour ahead of both chains' heads): its bytes
    # are calldata, and a zero byte costs 4 gas against 16, so two deadlines made at different
    # seconds can differ in gas by 12 and in the deployer's ether (CI saw it once).
    later = int(time.time()) + 3600
    monkeypatch.setattr(devnet_module, "time", SimpleNamespace(time=lambda: later,
                                                               perf_counter=time.perf_counter))
    monkeypatch.setattr(dt, "_cached", None)
    fresh = make_web3("eth-tester")
    deployed = await deploy_devnet(fresh)
    replayed = make_web3("eth-tester")
    devnet = await dt.devnet_into(replayed)
    assert (devnet.serv_token, devnet.quote_token, devnet.router, devnet.pair) == (
        deployed.serv_token, deployed.quote_token, deployed.router, deployed.pair)
    assert await snapshot_of(replayed, devnet) == await snapshot_of(fresh, deployed)


async def test_a_replayed_chain_is_stamped_now_not_when_the_template_was_made(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    require_contracts()
    monkeypatch.setattr(dt, "_cached", None)
    await dt.template()
    await asyncio.sleep(3)  # the template ages (minutes, in a long test run)
    started = int(time.time())
    w3 = make_web3("eth-tester")
    await dt.devnet_into(w3)
    first = await w3.eth.get_block(1)
    assert first["timestamp"] >= started  # a copy of the template's blocks would be 3 s older
    seconds = await block_time(w3)
    assert seconds is not None and seconds <= 1.5  # ~1 s a block, as a fresh deploy on eth-tester


async def test_an_old_template_is_deployed_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The deploy's addLiquidity has a 600 s deadline: an old template would replay a revert."""
    require_contracts()
    first = await dt.template()
    deploys = dt.deploys
    assert await dt.template() is first and dt.deploys == deploys
    monkeypatch.setattr(dt, "MAX_AGE_S", -1.0)
    again = await dt.template()
    assert again is not first and dt.deploys == deploys + 1
    assert again.blocks[0] == first.blocks[0]  # deterministic: the same funding transaction


def test_the_replay_refuses_a_used_chain() -> None:
    require_contracts()
    w3 = make_web3("eth-tester")
    w3.provider.ethereum_tester.mine_blocks(1)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="fresh"):
        asyncio.run(dt.devnet_into(w3))
