"""`mia verify-burns --rpc URL --api URL`: every published burn checked from chain data alone,
against the JSON-RPC chain `mia dev` runs (chain.node) and the API served over HTTP. The
command runs as its own process with no database configured."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from eth_account import Account
from sqlalchemy import update

from app.models import Buyback, BuybackTx
from chain.audit import audit
from chain.burn import BURN_ADDRESS
from chain.dex import swap
from chain.tx import TxSender
from jobs.treasury_tasks import check_buyback_threshold
from tests.support.live import live_server_beside
from tests.treasury.conftest import USD6, treasury_app

MIA = Path(sys.executable).with_name("mia")


async def verify_burns(rpc: str, api: str) -> tuple[int, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    env["DATABASE_URL"] = "sqlite+aiosqlite:////nonexistent/never-opened.db"  # proves: no DB read
    proc = await asyncio.create_subprocess_exec(
        str(MIA), "verify-burns", "--rpc", rpc, "--api", api, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert out, err.decode()
    return int(proc.returncode or 0), json.loads(out)


async def test_verify_burns_checks_every_burn_from_the_chain(
        chain_node_url, treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    settings = treasury_settings(chain_rpc_url=chain_node_url)
    async with treasury_app(settings, devnet_layout, operator) as t:
        for amount in ("120", "130.5"):
            await t.add_revenue(amount)
            bid = await check_buyback_threshold({"app": t.ctx})
            assert bid is not None and await t.run(bid) == "burned"
        async with live_server_beside(settings) as api_url:
            code, report = await verify_burns(chain_node_url, api_url)
            assert code == 0 and report["ok"] is True, report
            assert len(report["burns"]) == 2 and all(b["ok"] for b in report["burns"])  # type: ignore[union-attr]
            assert report["transfers_in_total"] == report["balance"] == report["published_total"]

            # someone else sends $SERV to the burn address: still consistent (a Transfer in)
            d = t.devnet
            sender = TxSender(t.w3, Account.from_key(d.trader_key), max_fee_wei=1000 * 10**9,
                              poll_interval=0.01)
            await swap(sender, t.ctx.treasury.router, 10 * USD6,
                       [d.quote_token, d.serv_token], to=BURN_ADDRESS, max_slippage_bps=9_999,
                       max_price_impact_bps=9_999)
            code, report = await verify_burns(chain_node_url, api_url)
            assert code == 0 and report["balance"] > report["published_total"]

            # a published amount the chain does not back is named
            bb = await t.buyback(bid)
            async with t.ctx.db.transaction() as session:
                await session.execute(update(Buyback).where(Buyback.id == bid)
                                      .values(serv_burned=int(bb.serv_burned or 0) + 1))
            code, report = await verify_burns(chain_node_url, api_url)
            assert code == 1 and report["ok"] is False
            assert [b["buyback_id"] for b in report["burns"] if not b["ok"]] == [bid]  # type: ignore[union-attr]


async def test_audit_reports_a_hash_the_chain_does_not_know(tapp) -> None:  # type: ignore[no-untyped-def]
    t = tapp
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid) == "burned"
    async with t.ctx.db.transaction() as session:
        await session.execute(update(BuybackTx).where(BuybackTx.buyback_id == bid,
                                                      BuybackTx.kind == "burn")
                              .values(tx_hash="0x" + "ab" * 32))
    report = await audit(t.w3, t.api.client)
    assert report.ok is False
    assert report.burns[0].problems == ["the chain knows no mined transaction with this hash"]
