"""Chain fixtures: one devnet (real compiled contracts + real Uniswap V2 bytecode from
node_modules) per test module on in-process eth-tester, reverted to a snapshot after each test.
The module's devnet is the session's deploy replayed into a fresh chain
(tests/support/devnet_template.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from web3 import AsyncWeb3

from chain.artifacts import CONTRACTS_DIR
from chain.client import eth_tester_of, make_web3
from chain.devnet import Devnet
from chain.dex import UniswapV2Router
from chain.tx import TxSender
from tests.support.devnet_template import devnet_into

GWEI = 10**9


def require_contracts() -> None:
    missing = [
        p for p in ("node_modules/@uniswap/v2-core/package.json",
                    "node_modules/@uniswap/v2-periphery/package.json",
                    "node_modules/solc/package.json")
        if not (CONTRACTS_DIR / p).exists()
    ]
    if missing:
        pytest.fail(
            f"contracts/{missing[0]} is missing: run `make install` (it runs `cd contracts && npm ci`)",
            pytrace=False,
        )


@dataclass
class Chain:
    w3: AsyncWeb3
    devnet: Devnet

    def sender(self, key: str, **kw: object) -> TxSender:
        kw.setdefault("max_fee_wei", 500 * GWEI)
        kw.setdefault("poll_interval", 0.01)
        return TxSender(self.w3, Account.from_key(key), **kw)  # type: ignore[arg-type]

    @property
    def treasury(self) -> TxSender:
        return self.sender(self.devnet.treasury_key)

    @property
    def trader(self) -> TxSender:
        return self.sender(self.devnet.trader_key)

    @property
    def router(self) -> UniswapV2Router:
        return UniswapV2Router(self.w3, self.devnet.router)

    @property
    def tester(self):  # noqa: ANN201
        return eth_tester_of(self.w3)


@pytest.fixture(scope="module")
def deployed() -> Chain:
    require_contracts()
    w3 = make_web3("eth-tester")
    devnet = asyncio.run(devnet_into(w3))
    return Chain(w3, devnet)


@pytest.fixture
def chain(deployed: Chain) -> Iterator[Chain]:
    """The module's devnet; whatever a test does to it is reverted afterwards."""
    tester = deployed.tester
    snapshot = tester.take_snapshot()
    try:
        yield deployed
    finally:
        tester.revert_to_snapshot(snapshot)
