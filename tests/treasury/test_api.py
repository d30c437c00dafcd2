"""The treasury's HTTP surface: who may call what, dry runs, listings, and verify on a
tampered record."""

from __future__ import annotations

from decimal import Decimal

from eth_account import Account
from sqlalchemy import update

from app.models import Buyback, BuybackTx
from jobs.treasury_tasks import check_buyback_threshold
from tests.support.harness import running_app
from tests.treasury.conftest import TApp, sign_in


async def test_operators_only_for_triggers_and_listings_burns_are_public(tapp: TApp) -> None:
    t = tapp
    await t.add_revenue("120")
    miner = await t.api.miner()
    for method, path, body in (("POST", "/trigger-buyback", {}), ("GET", "/buybacks", None),
                               ("GET", "/buybacks/1", None)):
        r = await t.api.client.request(method, path, json=body)
        assert r.status_code == 401, (path, r.text)
        r = await t.api.client.request(method, path, json=body, headers=miner.auth)
        assert r.status_code == 403 and r.json()["error"] == "insufficient_role", path
    assert all(e.buyback_id is None for e in await t.events())

    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid) == "burned"
    for path in ("/burns", "/burns/summary", f"/burns/{bid}/verify"):
        r = await t.api.client.get(path)
        assert r.status_code == 200 and r.headers["cache-control"].startswith("public"), path

    auth = await t.operator_auth()
    listing = (await t.api.client.get("/buybacks", headers=auth)).json()
    assert listing["total"] == 1
    one = (await t.api.client.get(f"/buybacks/{bid}", headers=auth)).json()
    assert one == listing["items"][0]
    assert one["status"] == "burned" and one["revenue_events"] == 1 and one["usd_amount"] == "120.000000"
    assert [x["kind"] for x in one["transactions"]] == ["approve", "swap", "burn"]
    assert all(isinstance(x["amount_out"], str) for x in one["transactions"] if x["kind"] != "approve")
    assert one["gas_used_total"] == sum(x["gas_used"] for x in one["transactions"])
    assert "treasury_private_key" not in str(one) and t.devnet.treasury_key[2:] not in str(one)
    assert (await t.api.client.get("/buybacks/999", headers=auth)).status_code == 404


async def test_dry_run_quotes_and_sends_nothing(tapp: TApp) -> None:
    t = tapp
    await t.add_revenue("1000", "500")
    auth = await t.operator_auth()
    nonce = await t.w3.eth.get_transaction_count(t.devnet.treasury)
    r = await t.api.client.post("/trigger-buyback", json={"dry_run": True}, headers=auth)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["dry_run"] is True and plan["usd_amount"] == "1500.000000"
    assert plan["quote_amount_in"] == str(1500 * 10**6)
    assert int(plan["expected_serv"]) > 0 and 0 < plan["price_impact_bps"] <= 200
    assert sum(int(c["amount_in"]) for c in plan["chunks"]) == 1500 * 10**6
    assert int(plan["amount_out_min_total"]) < int(plan["expected_serv"])
    smaller = (await t.api.client.post("/trigger-buyback", json={"dry_run": True,
                                                                 "amount_usd": "10"},
                                       headers=auth)).json()
    assert smaller["quote_amount_in"] == str(10 * 10**6)
    assert await t.w3.eth.get_transaction_count(t.devnet.treasury) == nonce
    assert all(e.buyback_id is None for e in await t.events())
    listing = (await t.api.client.get("/buybacks", headers=auth)).json()
    assert listing["total"] == 0

    # amount_usd takes the oldest events that fit, never splitting one
    r = await t.api.client.post("/trigger-buyback", json={"amount_usd": "1200"}, headers=auth)
    assert r.status_code == 202 and r.json()["usd_amount"] == "1000.000000"
    assert r.json()["status"] == "planned"


async def test_verify_on_a_tampered_record_names_the_failing_check(tapp: TApp) -> None:
    t = tapp
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid) == "burned"
    bb = await t.buyback(bid)
    rows = await t.txs(bid)
    burn = next(r for r in rows if r.kind == "burn")
    swap = next(r for r in rows if r.kind == "swap")

    async def failing() -> set[str]:
        body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
        assert body["verified"] is False
        return {c["name"] for c in body["checks"] if not c["ok"]}

    async with t.ctx.db.transaction() as session:  # the record claims one wei more was burned
        await session.execute(update(Buyback).where(Buyback.id == bid)
                              .values(serv_burned=int(bb.serv_burned or 0) + 1))
    assert await failing() == {"amount_matches_record"}
    async with t.ctx.db.transaction() as session:  # restored, but pointing at the swap's hash
        await session.execute(update(Buyback).where(Buyback.id == bid)
                              .values(serv_burned=bb.serv_burned))
        await session.execute(update(BuybackTx).where(BuybackTx.id == burn.id)
                              .values(tx_hash="0x" + "ab" * 32))
    assert await failing() == {"receipt_success"}
    async with t.ctx.db.transaction() as session:
        await session.execute(update(BuybackTx).where(BuybackTx.id == swap.id)
                              .values(tx_hash=swap.tx_hash + "x"))  # keep the unique hash free
        await session.execute(update(BuybackTx).where(BuybackTx.id == burn.id)
                              .values(tx_hash=swap.tx_hash))
    assert await failing() == {"transfer_to_burn_address", "amount_matches_record",
                               "swap_output_equals_burn_input", "usd_swapped_matches_swaps"}
    async with t.ctx.db.transaction() as session:
        await session.execute(update(BuybackTx).where(BuybackTx.id == burn.id)
                              .values(tx_hash=burn.tx_hash))
        await session.execute(update(BuybackTx).where(BuybackTx.id == swap.id)
                              .values(tx_hash=swap.tx_hash))
    body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    assert body["verified"] is True
    async with t.ctx.db.transaction() as session:  # one micro-dollar more swapped than on chain
        await session.execute(update(Buyback).where(Buyback.id == bid)
                              .values(usd_swapped=bb.usd_swapped + Decimal("0.000001")))
    assert await failing() == {"usd_swapped_matches_swaps"}


async def test_no_chain_configured_answers_503_and_burns_still_list(settings_factory) -> None:
    op = Account.create()
    async with running_app(settings_factory(operator_addresses=op.address)) as api:
        assert (await api.client.get("/burns")).json()["items"] == []
        for path in ("/burns/summary", "/burns/1/verify"):
            r = await api.client.get(path)
            assert r.status_code == 503 and r.json()["error"] == "treasury_unconfigured", path
        token = await sign_in(api, op, "/auth/login")
        r = await api.client.post("/trigger-buyback", json={"amount_usd": "5"},
                                  headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and "CHAIN_RPC_URL" in r.json()["detail"]


async def test_a_wrong_chain_id_is_refused(treasury_settings, devnet_layout, operator) -> None:
    async with running_app(treasury_settings(chain_id=1)) as api:
        r = await api.client.get("/burns/summary")
        assert r.status_code == 503 and "chain id" in r.json()["detail"]
