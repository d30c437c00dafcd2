"""One devnet deploy shared by many tests: the deploy's signed transactions, replayed into each
test's fresh eth-tester chain.

Why a replay and not a copy of the deployed chain (snapshot/revert or a copied chain DB): a
copy's blocks carry the timestamps of the moment it was deployed. Minutes later the next block
is mined at the wall clock, so the last 20 blocks show a gap of minutes and
``chain.tx.block_time`` (which paces the treasury's confirmation waits) would change; and the
Uniswap pair keeps ``blockTimestampLast`` (the deploy's addLiquidity block) in its storage, so
the first swap's price accumulators and any TWAP would differ too. Block timestamps can't be
rewritten without re-executing the blocks. Replaying the very same signed transactions does
exactly that: same senders, nonces, contract addresses, gas, balances and block numbers as a
fresh ``deploy_devnet`` (one transaction a block, as its auto-mined sends were), with timestamps
taken now, as the fresh deploy's were; it skips what made the deploy slow (gas estimates, fee
lookups, receipt polling through web3).

The deploy's addLiquidity carries a deadline (deploy time + 600 s), so a template older than
``MAX_AGE_S`` is deployed afresh rather than replayed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from web3 import AsyncWeb3

from chain.client import eth_tester_of, is_eth_tester, make_web3
from chain.devnet import Devnet, deploy_devnet

MAX_AGE_S = 300.0  # well inside the addLiquidity deadline (600 s after the deploy)


@dataclass(frozen=True)
class Template:
    devnet: Devnet
    blocks: tuple[bytes, ...]  # block n+1's only transaction, signed and encoded
    statuses: tuple[int, ...]  # its receipt status (all 1)
    made_at: float  # time.time() of the deploy

    @property
    def head(self) -> int:
        """The deploy's last block number."""
        return len(self.blocks)


_cached: Template | None = None
deploys = 0  # devnet deploys this process made for templates (measured by the tests' timing)


async def record(w3: AsyncWeb3) -> Template:
    """Deploy a devnet into the fresh eth-tester chain ``w3`` and keep its transactions."""
    global deploys
    tester = eth_tester_of(w3)
    if tester.get_block_by_number("latest")["number"] != 0:
        raise RuntimeError("a template is recorded on a fresh chain")
    made_at = time.time()
    devnet = await deploy_devnet(w3)
    deploys += 1
    chain = tester.backend.chain
    head = chain.get_canonical_head().block_number
    blocks, statuses = [], []
    for n in range(1, head + 1):
        txs = chain.get_canonical_block_by_number(n).transactions
        if len(txs) != 1:
            raise RuntimeError(f"devnet block {n} holds {len(txs)} transactions, not 1: cannot replay")
        blocks.append(txs[0].encode())
        statuses.append(int(tester.get_transaction_receipt("0x" + txs[0].hash.hex())["status"]))
    return Template(devnet, tuple(blocks), tuple(statuses), made_at)


async def template() -> Template:
    """The process's template, deployed again once it is older than MAX_AGE_S."""
    global _cached
    if _cached is None or time.time() - _cached.made_at > MAX_AGE_S:
        _cached = await record(make_web3("eth-tester"))
    return _cached


async def devnet_into(w3: AsyncWeb3) -> Devnet:
    """What ``deploy_devnet(w3)`` gives on a fresh eth-tester chain, by replaying the template;
    a JSON-RPC node (tests of the app on one) gets a real deploy."""
    if not is_eth_tester(w3):
        return await deploy_devnet(w3)
    t = await template()
    tester: Any = eth_tester_of(w3)
    if tester.get_block_by_number("latest")["number"] != 0 or not tester.auto_mine_transactions:
        raise RuntimeError("the devnet is replayed into a fresh, auto-mining eth-tester chain")
    for n, (raw, status) in enumerate(zip(t.blocks, t.statuses, strict=True), start=1):
        tx_hash = tester.send_raw_transaction("0x" + raw.hex())
        receipt = tester.get_transaction_receipt(tx_hash)
        if (receipt["block_number"], receipt["status"]) != (n, status):
            raise RuntimeError(f"the devnet replay diverged at block {n}: {receipt}")
    return t.devnet
