"""Deposits in public: GET /deposits (no business named), /burns/summary's deposits in beside
the buybacks and burns, and `mia verify-deposits` checking every credit from chain data alone:
it passes on true records and names the deposit whose record was tampered with."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path

from sqlalchemy import update

from app.models import Deposit
from chain.deposit_audit import audit
from tests.accounts.conftest import DEPTH, DApp, treasury_app
from tests.support.live import live_server_beside

REF = "0123456789abcdef"
MIA = Path(sys.executable).with_name("mia")


async def _credited(dapp: DApp) -> tuple[int, str, str]:
    acme = await dapp.business("acme", REF)
    await dapp.business("globex", "fedcba9876543210")
    first, _ = await dapp.pay("10", REF)
    plain, _ = await dapp.pay("2.5", None)  # no memo: an operator assigns it
    dapp.mine(DEPTH)
    await dapp.scan()
    auth = await dapp.t.operator_auth()
    [row] = [r for r in await dapp.rows() if r.tx_hash == plain]
    r = await dapp.t.api.client.post(f"/deposits/{row.id}/assign", json={"business_id": acme},
                                     headers=auth)
    assert r.status_code == 200, r.text
    pending, _ = await dapp.pay("1", REF)  # seen, not yet deep
    await dapp.scan()
    return acme, first, pending


async def test_the_public_list_and_the_summary_show_deposits_without_businesses(dapp: DApp) -> None:
    acme, first, pending = await _credited(dapp)
    body = (await dapp.t.api.client.get("/deposits")).json()
    assert body["credited_count"] == 2 and body["credited_usd"] == "12.500000"
    assert body["confirmations"] == DEPTH and body["total"] == 3
    items = {x["tx_hash"]: x for x in body["items"]}
    assert items[first]["status"] == "credited" and items[first]["reference"] == REF
    assert items[first]["amount"] == "10000000" and items[first]["amount_usd"] == "10.000000"
    assert items[first]["explorer_url"] == f"https://explorer.test/tx/{first}"
    assert items[pending]["status"] == "seen"
    assert all("business_id" not in x and "acme" not in str(x) for x in body["items"])
    credited = (await dapp.t.api.client.get("/deposits", params={"status": "credited"})).json()
    assert {x["status"] for x in credited["items"]} == {"credited"} and credited["total"] == 2
    assert (await dapp.t.api.client.get("/deposits", params={"status": "x"})).status_code == 422

    ops = (await dapp.t.api.client.get("/treasury/deposits",
                                       headers=await dapp.t.operator_auth())).json()
    assert {x["business_id"] for x in ops["items"] if x["status"] == "credited"} == {acme}
    assert (await dapp.t.api.client.get("/treasury/deposits")).status_code == 401

    summary = (await dapp.t.api.client.get("/burns/summary")).json()
    assert summary["deposits_credited"] == 2 and summary["deposits_usd"] == "12.500000"
    assert summary["quote_token"] == dapp.t.devnet.quote_token
    assert summary["treasury_address"] == dapp.t.devnet.treasury
    # a credit within the same block is a new answer: the summary's cache keys on deposits too
    [seen] = [r for r in await dapp.rows() if r.status == "seen"]
    async with dapp.ctx.db.transaction() as session:
        await session.execute(update(Deposit).where(Deposit.id == seen.id)
                              .values(status="credited"))
    summary = (await dapp.t.api.client.get("/burns/summary")).json()
    assert summary["deposits_credited"] == 3 and summary["deposits_usd"] == "13.500000"


async def test_verify_deposits_passes_on_true_records_and_names_a_tampered_one(dapp: DApp) -> None:
    await _credited(dapp)
    report = await audit(dapp.t.w3, dapp.t.api.client)
    assert report.ok, report
    assert len(report.deposits) == 2 and report.sum_usd == report.published_usd == "12.500000"
    assert sorted(c.by_operator for c in report.deposits) == [False, True]

    # a business checks that every deep deposit carrying its reference was credited
    mine = await audit(dapp.t.w3, dapp.t.api.client, reference=REF)
    assert mine.ok and mine.missing == []
    dapp.mine(DEPTH)  # the pending one is deep now, and not credited before the next scan
    mine = await audit(dapp.t.w3, dapp.t.api.client, reference=REF)
    assert not mine.ok and len(mine.missing) == 1
    await dapp.scan()
    assert (await audit(dapp.t.w3, dapp.t.api.client, reference=REF)).ok

    rows = await dapp.rows()
    victim = next(r for r in rows if r.reference == REF and r.status == "credited")
    async with dapp.ctx.db.transaction() as session:  # the record claims one more micro-dollar
        await session.execute(update(Deposit).where(Deposit.id == victim.id)
                              .values(amount_usd=victim.amount_usd + Decimal("0.000001")))
    report = await audit(dapp.t.w3, dapp.t.api.client)
    assert not report.ok
    [bad] = [c for c in report.deposits if not c.ok]
    assert bad.id == victim.id and "rounded down" in bad.problems[0]
    async with dapp.ctx.db.transaction() as session:  # a memo the transaction does not carry
        await session.execute(update(Deposit).where(Deposit.id == victim.id)
                              .values(amount_usd=victim.amount_usd, reference="fedcba9876543210"))
    report = await audit(dapp.t.w3, dapp.t.api.client)
    [bad] = [c for c in report.deposits if not c.ok]
    assert bad.id == victim.id and "memo" in bad.problems[0]


async def test_mia_deposit_pays_and_mia_verify_deposits_checks_it_without_a_database(
        chain_node_url, deposit_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    settings = deposit_settings(chain_rpc_url=chain_node_url, deposit_start_block=None)
    async with treasury_app(settings, devnet_layout, operator) as t:
        dapp = DApp(t)
        await dapp.business("acme", REF)
        d = t.devnet
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
        paid = await asyncio.create_subprocess_exec(  # what `mia dev` prints for a top-up
            str(MIA), "deposit", "--business-ref", REF.upper(), "--amount", "3",
            "--devnet", "/nonexistent.json",
            env={**env, "CHAIN_RPC_URL": chain_node_url, "QUOTE_TOKEN_ADDRESS": d.quote_token,
                 "TREASURY_ADDRESS": d.treasury, "CHAIN_ID": str(d.chain_id)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await paid.communicate()
        assert paid.returncode == 0, err.decode()
        assert f"with reference {REF}" in out.decode() and "a9059cbb" in out.decode()
        dapp_mine = [await dapp.pay("0.000001", None) for _ in range(DEPTH)]  # grows the chain
        assert len(dapp_mine) == DEPTH
        await dapp.scan()
        assert [r.status for r in await dapp.rows() if r.reference == REF] == ["credited"]
        env["DATABASE_URL"] = "sqlite+aiosqlite:////nonexistent/never-opened.db"
        async with live_server_beside(settings) as api_url:
            proc = await asyncio.create_subprocess_exec(
                str(MIA), "verify-deposits", "--rpc", chain_node_url, "--api", api_url, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
        text = out.decode()
        assert proc.returncode == 0, (text, err.decode())
        assert text.strip().endswith("OK") and "3.000000" in text and REF in text
