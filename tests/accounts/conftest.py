"""Deposits on the local chain: the treasury's app on eth-tester (tests/treasury/conftest.py) with
businesses that have deposit references, and a payer (the devnet's trader) who sends the
stablecoin with or without a memo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from eth_account import Account
from sqlalchemy import select

from app.accounts import deposits as service
from app.models import Business, Deposit, LedgerEntry
from chain.deposits import deposit
from chain.tokens import erc20
from chain.tx import PreparedTx, TxSender
from tests.chain.conftest import require_contracts
from tests.support.devnet_template import template
from tests.treasury.conftest import (USD6, TApp, devnet_layout, operator,  # noqa: F401
                                     treasury_app, treasury_settings)

DEPTH = 3  # CONFIRMATIONS of these tests


@dataclass
class DApp:
    t: TApp

    @property
    def ctx(self):  # type: ignore[no-untyped-def]
        return self.t.ctx

    def payer(self) -> TxSender:
        return TxSender(self.t.w3, Account.from_key(self.t.devnet.trader_key),
                        max_fee_wei=1000 * 10**9, poll_interval=0.01)

    async def business(self, name: str, ref: str | None) -> int:
        async with self.ctx.db.transaction() as session:
            b = Business(name=name, deposit_ref=ref)
            session.add(b)
            await session.flush()
            return b.id

    async def pay(self, usd: str, memo: str | None, raw: list[bytes] | None = None) -> tuple[str, int]:
        """Send `usd` dollars of the stablecoin to the treasury (with the memo, or a plain
        transfer); (tx hash, block)."""
        d = self.t.devnet
        units = int(Decimal(usd) * USD6)

        def keep(p: PreparedTx) -> None:
            if raw is not None:
                raw.append(p.raw)

        if memo is not None:
            return await deposit(self.payer(), d.quote_token, d.treasury, units, memo,
                                 on_prepared=keep)
        token = erc20(self.t.w3, d.quote_token)
        receipt, final = await self.payer().send_tracked(
            {"to": token.address, "data": token.encode_abi("transfer", [d.treasury, units])},
            on_prepared=keep)
        return final.tx_hash, int(receipt["blockNumber"])

    async def scan(self) -> service.ScanResult:
        return await service.scan(self.ctx)

    async def rows(self) -> list[Deposit]:
        async with self.ctx.db.sessions() as session:
            return list((await session.execute(select(Deposit).order_by(Deposit.id))).scalars())

    async def balance(self, business_id: int) -> Decimal:
        async with self.ctx.db.sessions() as session:
            return (await session.get(Business, business_id)).balance_usd  # type: ignore[union-attr]

    async def entries(self, business_id: int) -> list[LedgerEntry]:
        async with self.ctx.db.sessions() as session:
            return list((await session.execute(select(LedgerEntry).where(
                LedgerEntry.business_id == business_id).order_by(LedgerEntry.id))).scalars())

    def mine(self, n: int = 1) -> None:
        self.t.tester.mine_blocks(n)


@pytest.fixture(scope="session")
def after_deploy() -> int:
    """The first block after the devnet's deploy (deterministic): deposits are watched from
    there, as `mia dev` does (the deploy's own funding of the treasury is no deposit)."""
    require_contracts()
    return asyncio.run(template()).head + 1


@pytest.fixture
def deposit_settings(treasury_settings, after_deploy):  # type: ignore[no-untyped-def]
    def make(database_url: str | None = None, **overrides: object):  # type: ignore[no-untyped-def]
        values: dict[str, object] = dict(confirmations=DEPTH, deposit_start_block=after_deploy)
        values.update(overrides)
        return treasury_settings(database_url, **values)
    return make


@pytest.fixture
async def dapp(deposit_settings, devnet_layout, operator) -> AsyncIterator[DApp]:  # type: ignore[no-untyped-def]
    async with treasury_app(deposit_settings(), devnet_layout, operator) as t:
        yield DApp(t)


@pytest.fixture
async def dapp_any(any_db, deposit_settings, devnet_layout, operator) -> AsyncIterator[DApp]:  # type: ignore[no-untyped-def]
    """dapp on SQLite and on PostgreSQL."""
    async with treasury_app(deposit_settings(any_db), devnet_layout, operator) as t:
        yield DApp(t)
