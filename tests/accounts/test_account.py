"""GET /account and /account/ledger: a business's own numbers, read from its ledger."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from eth_account import Account

from app.accounts import ledger
from app.accounts.instructions import treasury_address
from app.accounts.ledger import JobRef
from app.accounts.spend import month_start
from app.models import utcnow
from tests.accounts.support import operating
from tests.idle.support import auth

PRICE = Decimal("2")  # USD per 1k tokens
TREASURY_KEY = "0x" + "11" * 32
QUOTE = "0x" + "ab" * 20


async def _history(ops, business_id: int, k1: int, k2: int) -> None:  # type: ignore[no-untyped-def]
    """Last month: a job charged 0.5. This month: one job in flight (1.0 held), one charged 1.0
    of its 2.0 hold, one failed (0.5 held, then released). Keys: all k1's but the failed one."""
    last_month = month_start(utcnow()) - timedelta(days=1)
    common = dict(price_per_1k_usd=PRICE, model="m")
    async with ops.api.ctx.db.transaction() as s:
        old = JobRef("chat", "old")
        await ledger.hold(s, business_id, old, Decimal("1"), tokens=500, api_key_id=k1,
                          now=last_month, **common)
        await ledger.settle(s, old, 250, now=last_month)
        await ledger.hold(s, business_id, JobRef("chat", "c1"), Decimal("1"), tokens=500,
                          api_key_id=k1, **common)
        c2 = JobRef("chat", "c2")
        await ledger.hold(s, business_id, c2, Decimal("2"), tokens=1000, api_key_id=k1,
                          **common)
        await ledger.settle(s, c2, 500)
        i1 = JobRef("idle", "1")
        await ledger.hold(s, business_id, i1, Decimal("0.5"), tokens=250, api_key_id=k2,
                          **common)
        await ledger.release_job(s, i1)


async def test_account_numbers_are_the_ledgers(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db, treasury_private_key=TREASURY_KEY,
                         quote_token_address=QUOTE, chat_retention_days=90) as ops:
        c = ops.api.client
        acme = await ops.business("Acme", low_balance_usd="18", contact_email="a@acme.example")
        k1 = await ops.key(acme["id"], ["chat"], monthly_limit_usd="40")
        k2 = await ops.key(acme["id"], ["idle"])
        await ops.credit(acme["id"], "20", "inv-1")
        other = await ops.business("Other")
        await ops.credit(other["id"], "99", "inv-1")
        await _history(ops, acme["id"], k1["id"], k2["id"])

        r = await c.get("/account", headers=auth(k1["key"]))
        assert r.status_code == 200, r.text
        a = r.json()
        assert a["business"]["name"] == "Acme" and a["business"]["contact_email"] == "a@acme.example"
        assert a["balance_usd"] == "17.500000"  # 20 - 0.5 (last month) - 1.0 - 1.0 held
        assert a["held_usd"] == "1.000000" and a["spent_this_month_usd"] == "1.000000"
        assert a["low_balance"] is True and a["low_balance_usd"] == "18.000000"
        assert a["retention_days_effective"] == 90  # the server's default: none of its own
        assert a["key"] == {"id": k1["id"], "prefix": k1["prefix"], "scopes": ["chat"],
                            "monthly_limit_usd": "40.000000", "spent_this_month_usd": "1.000000",
                            "held_usd": "1.000000"}
        d = a["deposit"]
        assert d["deposit_ref"] == acme["deposit_ref"]
        assert d["deposit_memo_hex"] == "0x" + acme["deposit_ref"]
        assert d["treasury_address"] == Account.from_key(TREASURY_KEY).address
        assert d["quote_token_address"] == QUOTE and "transfer(treasury, amount)" in d["how"]
        async with ops.api.ctx.db.sessions() as s:
            assert await ledger.sum_of_entries(s, acme["id"]) == Decimal("17.5")

        r = await c.get("/account", headers=auth(k2["key"]))  # an idle-only key: any scope
        a2 = r.json()
        assert a2["key"]["spent_this_month_usd"] == "0.000000" and a2["key"]["held_usd"] == "0.000000"
        assert a2["key"]["monthly_limit_usd"] is None and a2["balance_usd"] == "17.500000"

        await c.patch(f"/businesses/{acme['id']}", json={"low_balance_usd": None,
                                                         "retention_days": 7},
                      headers=ops.headers)
        a3 = (await c.get("/account", headers=auth(k1["key"]))).json()
        assert a3["low_balance"] is False and a3["low_balance_usd"] is None
        assert a3["retention_days_effective"] == 7

        r = await c.get(f"/businesses/{acme['id']}/keys", headers=ops.headers)
        by_id = {k["id"]: k for k in r.json()["keys"]}
        assert by_id[k1["id"]]["spent_this_month_usd"] == "1.000000"
        assert by_id[k1["id"]]["held_usd"] == "1.000000"

        # the business's own ledger: its entries only, newest first
        r = await c.get("/account/ledger", params={"limit": 3}, headers=auth(k2["key"]))
        page = r.json()
        assert [e["kind"] for e in page["items"]] == ["release", "hold", "charge"]
        assert all(e["business_id"] == acme["id"] for e in page["items"])
        seen = page["items"]
        while page["next_before"]:
            page = (await c.get("/account/ledger", params={"before": page["next_before"]},
                                headers=auth(k2["key"]))).json()
            seen += page["items"]
        assert len(seen) == 10 and seen[-1]["reference"] == "inv-1"
        assert sum(Decimal(e["amount_usd"]) for e in seen) == Decimal("17.5")

        for headers in ({}, auth("mia_k_nope"), ops.headers):
            r = await c.get("/account", headers=headers)
            assert r.status_code == 401, headers
        await c.delete(f"/api-keys/{k2['id']}", headers=ops.headers)
        r = await c.get("/account", headers=auth(k2["key"]))
        assert r.status_code == 401 and r.json()["error"] == "api_key_revoked"


async def test_no_treasury_configured(settings_factory, sqlite_url):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, sqlite_url) as ops:
        acme = await ops.business("Acme")
        key = await ops.key(acme["id"])
        a = (await ops.api.client.get("/account", headers=auth(key["key"]))).json()
        assert a["deposit"]["treasury_address"] is None and a["balance_usd"] == "0.000000"
        assert a["held_usd"] == "0.000000" and a["low_balance"] is False
        assert a["deposit"]["deposit_memo_hex"] == "0x" + acme["deposit_ref"]
    assert treasury_address(ops.api.settings.model_copy(
        update={"treasury_address": "0x" + "cd" * 20})) == "0x" + "cd" * 20
    assert treasury_address(ops.api.settings, built="0xBuilt") == "0xBuilt"
