"""Treasury fixtures: the app on an in-process eth-tester chain, with the real contracts
(chain.devnet: $SERV, DevUSD, WETH9, Uniswap V2) deployed into the SAME web3 the app uses.

The devnet's addresses are deterministic (fixed dev keys and nonces), so they are learned once
per session and put in the settings before the app starts; each test then gets a fresh devnet in
its app's own chain (the session's deploy replayed, tests/support/devnet_template.py: same blocks,
addresses and balances as a deploy, timestamps of now) and checks it landed on those addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from web3 import AsyncWeb3

from app.context import AppContext
from app.models import Buyback, BuybackTx, IdleJob, RevenueEvent, utcnow
from app.treasury.onchain import get_treasury
from app.treasury.runner import run_buyback
from chain.client import eth_tester_of
from chain.devnet import Devnet
from chain.tokens import erc20
from jobs.treasury_tasks import check_buyback_threshold
from tests.chain.conftest import require_contracts
from tests.support.devnet_template import devnet_into, template
from tests.support.harness import Harness, running_app

USD6 = 10**6


class SimulatedCrash(Exception):
    """Raised at a checkpoint: the process 'dies' there."""


@pytest.fixture(scope="session")
def devnet_layout() -> Devnet:
    require_contracts()
    return asyncio.run(template()).devnet


@pytest.fixture(scope="session")
def operator() -> LocalAccount:
    return Account.create()


@pytest.fixture
def treasury_settings(settings_factory, devnet_layout: Devnet, operator: LocalAccount):  # type: ignore[no-untyped-def]
    d = devnet_layout

    def make(database_url: str | None = None, **overrides: object):  # type: ignore[no-untyped-def]
        values: dict[str, object] = dict(
            chain_rpc_url="eth-tester", chain_id=d.chain_id, serv_token_address=d.serv_token,
            quote_token_address=d.quote_token, dex_router_address=d.router,
            burn_address=d.burn_address, treasury_private_key=d.treasury_key,
            operator_addresses=operator.address, tx_timeout_s=10.0, max_fee_gwei=Decimal(1000),
            explorer_tx_url="https://explorer.test/tx/{tx_hash}", run_maintenance_in_api=False,
            buyback_chunk_interval_s=0, confirmations=1, twap_window_s=0)
        values.update(overrides)
        return settings_factory(database_url, **values)

    return make


@dataclass
class TApp:
    api: Harness
    devnet: Devnet
    operator: LocalAccount
    _token: str | None = field(default=None, repr=False)

    @property
    def ctx(self):  # type: ignore[no-untyped-def]
        return self.api.ctx

    @property
    def w3(self) -> AsyncWeb3:
        return self.api.ctx.chain.w3  # type: ignore[no-any-return]

    @property
    def tester(self) -> Any:
        return eth_tester_of(self.w3)

    async def operator_auth(self) -> dict[str, str]:
        if self._token is None:
            self._token = await sign_in(self.api, self.operator, "/auth/login")
        return {"Authorization": f"Bearer {self._token}"}

    async def add_revenue(self, *amounts: str | Decimal) -> list[int]:
        return await add_revenue(self.ctx, *amounts)

    async def balance(self, token: str, holder: str) -> int:
        return int(await erc20(self.w3, token).functions.balanceOf(holder).call())

    async def balances(self) -> dict[str, int]:
        d = self.devnet
        return {"treasury_usd": await self.balance(d.quote_token, d.treasury),
                "treasury_serv": await self.balance(d.serv_token, d.treasury),
                "burned": await self.balance(d.serv_token, d.burn_address)}

    async def buyback(self, buyback_id: int) -> Buyback:
        async with self.ctx.db.sessions() as session:
            bb = await session.get(Buyback, buyback_id)
            assert bb is not None
            return bb

    async def txs(self, buyback_id: int) -> list[BuybackTx]:
        async with self.ctx.db.sessions() as session:
            return list((await session.execute(select(BuybackTx).where(
                BuybackTx.buyback_id == buyback_id).order_by(BuybackTx.seq))).scalars())

    async def events(self) -> list[RevenueEvent]:
        async with self.ctx.db.sessions() as session:
            return list((await session.execute(select(RevenueEvent).order_by(RevenueEvent.id))).scalars())

    async def run(self, buyback_id: int, checkpoint: Callable[[str], Awaitable[None]] | None = None) -> str:
        return await run_buyback(self.ctx, buyback_id, checkpoint=checkpoint)

    async def treasury_txs(self, since_block: int) -> list[dict[str, Any]]:
        """Every transaction the treasury account got mined since ``since_block``, classified
        by its target: what the chain says happened, independent of our records."""
        d = self.devnet
        kinds = {d.router: "swap", d.quote_token: "approve", d.serv_token: "burn"}
        out = []
        head = await self.w3.eth.block_number
        for n in range(since_block + 1, head + 1):
            block = await self.w3.eth.get_block(n, full_transactions=True)
            for tx in block["transactions"]:
                if tx["from"] != d.treasury:
                    continue
                receipt = await self.w3.eth.get_transaction_receipt(tx["hash"])
                out.append({"kind": kinds.get(tx["to"], "other"), "hash": "0x" + bytes(tx["hash"]).hex(),
                            "nonce": tx["nonce"], "status": receipt["status"],
                            "gas_used": receipt["gasUsed"]})
        return out


async def add_revenue(ctx: AppContext, *amounts: str | Decimal) -> list[int]:
    """RevenueEvents as a completed idle job writes them (one per job)."""
    ids = []
    async with ctx.db.transaction() as session:
        for amount in amounts:
            job = IdleJob(prompt="p", status="completed", output_tokens=1,
                          usd_earned=Decimal(amount), completed_at=utcnow(), processed_by="miner")
            session.add(job)
            await session.flush()
            event = RevenueEvent(idle_job_id=job.id, amount_usd=Decimal(amount), source="miner",
                                 output_tokens=1, created_at=utcnow())
            session.add(event)
            await session.flush()
            ids.append(event.id)
    return ids


async def sign_in(api: Harness, account: LocalAccount, path: str) -> str:
    r = await api.client.get("/auth/nonce", params={"address": account.address})
    r.raise_for_status()
    message = r.json()["message"]
    sig = account.sign_message(encode_defunct(text=message)).signature.hex()
    r = await api.client.post(path, json={"message": message,
                                          "signature": "0x" + sig.removeprefix("0x")})
    r.raise_for_status()
    return r.json()["token"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def treasury_app(settings, layout: Devnet, operator: LocalAccount) -> AsyncIterator[TApp]:  # type: ignore[no-untyped-def]
    async with running_app(settings) as api:
        devnet = await devnet_into(api.ctx.chain.w3)
        if (devnet.serv_token, devnet.quote_token, devnet.router) != (
                layout.serv_token, layout.quote_token, layout.router):
            raise RuntimeError("the devnet did not deploy to its usual addresses")
        await get_treasury(api.ctx, signer=True)
        yield TApp(api, devnet, operator)


DEPTH = 3  # CONFIRMATIONS of the finality and reorg tests (`deep`)
@pytest.fixture
async def deep(treasury_settings, devnet_layout, operator) -> AsyncIterator[tuple[TApp, int, int]]:  # type: ignore[no-untyped-def]
    """(app, a started 150 USD buyback, the block before it) with CONFIRMATIONS=DEPTH."""
    async with treasury_app(treasury_settings(confirmations=DEPTH), devnet_layout, operator) as t:
        await t.add_revenue("150")
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None
        yield t, bid, await t.w3.eth.block_number


@pytest.fixture
async def tapp(treasury_settings, devnet_layout, operator) -> AsyncIterator[TApp]:  # type: ignore[no-untyped-def]
    async with treasury_app(treasury_settings(), devnet_layout, operator) as t:
        yield t


@pytest.fixture
async def tapp_any(any_db, treasury_settings, devnet_layout, operator) -> AsyncIterator[TApp]:  # type: ignore[no-untyped-def]
    """tapp on SQLite and on PostgreSQL."""
    async with treasury_app(treasury_settings(any_db), devnet_layout, operator) as t:
        yield t


def crash_at(point: str, nth: int = 1) -> Callable[[str], Awaitable[None]]:
    seen = {"n": 0}

    async def checkpoint(name: str) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] == nth:
                raise SimulatedCrash(point)

    return checkpoint


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
