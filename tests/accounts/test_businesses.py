"""Operators manage businesses and their keys: CRUD, validation (4xx JSON, never 500), roles,
deposit references for every way a business is made, removed businesses frozen."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import select, update

from app.models import ApiKey, Business, utcnow
from tests.accounts.support import operating
from tests.idle.support import auth


async def test_operator_creates_lists_reads_and_patches_businesses(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        c = ops.api.client
        acme = await ops.business("Acme", contact_email="ops@acme.example",
                                  contact_phone="+49 30 1234567", retention_days=30,
                                  low_balance_usd="5.50")
        assert acme["balance_usd"] == "0.000000" and acme["low_balance_usd"] == "5.500000"
        assert len(acme["deposit_ref"]) == 16 and int(acme["deposit_ref"], 16) >= 0
        assert acme["retention_days"] == 30 and acme["removed_at"] is None
        other = await ops.business("Other")
        assert other["deposit_ref"] != acme["deposit_ref"]

        r = await c.post("/businesses", json={"name": "Acme"}, headers=ops.headers)
        assert r.status_code == 409 and r.json()["error"] == "business_exists"
        r = await c.post("/businesses", json={"name": " Acme "}, headers=ops.headers)
        assert r.status_code == 409  # stored stripped: the same name

        r = await c.get(f"/businesses/{acme['id']}", headers=ops.headers)
        assert r.status_code == 200 and r.json() == acme
        for missing in ("999999", "abc", "1" * 40, "-1"):
            r = await c.get(f"/businesses/{missing}", headers=ops.headers)
            assert r.status_code == 404 and r.json()["error"] == "business_not_found", missing

        # pages: newest first, keyset
        for i in range(3):
            await ops.business(f"b{i}")
        r = await c.get("/businesses", params={"limit": 2}, headers=ops.headers)
        page = r.json()
        assert [b["name"] for b in page["items"]] == ["b2", "b1"] and page["next_before"]
        r = await c.get("/businesses", params={"limit": 2, "before": page["next_before"]},
                        headers=ops.headers)
        assert [b["name"] for b in r.json()["items"]] == ["b0", "Other"]
        r = await c.get("/businesses", params={"limit": 10, "before": r.json()["next_before"]},
                        headers=ops.headers)
        assert [b["name"] for b in r.json()["items"]] == ["Acme"]
        assert r.json()["next_before"] is None

        # patch: only the fields sent; null clears
        r = await c.patch(f"/businesses/{acme['id']}",
                          json={"contact_phone": None, "retention_days": None,
                                "low_balance_usd": "1"}, headers=ops.headers)
        assert r.status_code == 200, r.text
        patched = r.json()
        assert patched["contact_phone"] is None and patched["retention_days"] is None
        assert patched["low_balance_usd"] == "1.000000"
        assert patched["contact_email"] == "ops@acme.example" and patched["name"] == "Acme"
        r = await c.patch(f"/businesses/{acme['id']}", json={"name": "Other"},
                          headers=ops.headers)
        assert r.status_code == 409 and r.json()["error"] == "business_exists"
        r = await c.patch(f"/businesses/{acme['id']}", json={"name": "Acme Corp"},
                          headers=ops.headers)
        assert r.json()["name"] == "Acme Corp"
        r = await c.patch("/businesses/424242", json={"name": "x"}, headers=ops.headers)
        assert r.status_code == 404


async def test_bad_input_is_a_clear_4xx(settings_factory, sqlite_url):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, sqlite_url) as ops:
        c = ops.api.client
        acme = await ops.business("Acme")
        bad = [{"name": ""}, {"name": "   "}, {"name": "x" * 201}, {"name": "tab\there"},
               {"name": "a", "contact_email": "nope"}, {"name": "a", "contact_email": "a@b"},
               {"name": "a", "contact_email": "a b@c.de"}, {"name": "a", "contact_phone": "12"},
               {"name": "a", "contact_phone": "call me"}, {"name": "a", "retention_days": -1},
               {"name": "a", "retention_days": "30"}, {"name": "a", "low_balance_usd": 5.5},
               {"name": "a", "low_balance_usd": "-1"}, {"name": "a", "low_balance_usd": "0.0000001"},
               {"name": "a", "low_balance_usd": "NaN"}, {"name": "a", "low_balance_usd": "1e30"},
               {"name": 5}, {}]
        for body in bad:
            r = await c.post("/businesses", json=body, headers=ops.headers)
            assert r.status_code == 422 and r.json()["error"] == "validation_error", (body, r.text)
        r = await c.patch(f"/businesses/{acme['id']}", json={"name": None}, headers=ops.headers)
        assert r.status_code == 422
        r = await c.patch(f"/businesses/{acme['id']}", json={"contact_email": "x@"},
                          headers=ops.headers)
        assert r.status_code == 422
        r = await c.post("/businesses", content=b"[1]", headers=ops.headers)
        assert r.status_code == 400
        async with ops.api.ctx.db.sessions() as s:
            assert (await s.execute(select(Business.name))).scalars().all() == ["Acme"]


async def test_only_operators(settings_factory, sqlite_url):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, sqlite_url) as ops:
        c = ops.api.client
        acme = await ops.business("Acme")
        key = (await ops.key(acme["id"]))["key"]
        miner = await ops.api.miner()
        calls = [("POST", "/businesses", {"name": "x"}), ("GET", "/businesses", None),
                 ("GET", f"/businesses/{acme['id']}", None),
                 ("PATCH", f"/businesses/{acme['id']}", {"name": "y"}),
                 ("POST", f"/businesses/{acme['id']}/keys", {"scopes": ["chat"]}),
                 ("GET", f"/businesses/{acme['id']}/keys", None),
                 ("POST", f"/businesses/{acme['id']}/credits",
                  {"amount_usd": "1", "reference": "r"}),
                 ("GET", f"/businesses/{acme['id']}/ledger", None)]
        for method, path, body in calls:
            r = await c.request(method, path, json=body)
            assert r.status_code == 401, (method, path)
            r = await c.request(method, path, json=body, headers=miner.auth)
            assert r.status_code == 403 and r.json()["error"] == "insufficient_role", (method, path)
            r = await c.request(method, path, json=body, headers=auth(key))
            assert r.status_code == 401, (method, path)  # a business key is no session
        r = await c.get(f"/businesses/{acme['id']}", headers=ops.headers)
        assert r.json()["name"] == "Acme" and r.json()["balance_usd"] == "0.000000"


async def test_keys_under_a_business(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        c = ops.api.client
        acme = await ops.business("Acme")
        created = await ops.key(acme["id"], ["idle"], monthly_limit_usd="50")
        assert created["key"].startswith(created["prefix"]) and created["scopes"] == ["idle"]
        assert created["monthly_limit_usd"] == "50.000000"
        assert created["spent_this_month_usd"] == "0.000000"
        plain = await ops.key(acme["id"], ["chat"])
        assert plain["monthly_limit_usd"] is None

        r = await c.post("/idle-job", json={"prompt": "p"}, headers=auth(created["key"]))
        assert r.status_code == 402, r.text  # the key works; an idle job needs a balance
        await ops.credit(acme["id"], "1", "inv-1")
        r = await c.post("/idle-job", json={"prompt": "p"}, headers=auth(created["key"]))
        assert r.status_code == 202, r.text  # the key works, with its scope
        r = await c.post("/chat", json={"message": "m"}, headers=auth(created["key"]))
        assert r.status_code == 403

        r = await c.get(f"/businesses/{acme['id']}/keys", headers=ops.headers)
        listed = r.json()["keys"]
        assert [k["id"] for k in listed] == [plain["id"], created["id"]]
        assert all("key" not in k for k in listed)

        path = f"/businesses/{acme['id']}/keys/{created['id']}"
        r = await c.patch(path, json={"monthly_limit_usd": "12.345"}, headers=ops.headers)
        assert r.status_code == 200 and r.json()["monthly_limit_usd"] == "12.345000"
        r = await c.patch(path, json={"monthly_limit_usd": None}, headers=ops.headers)
        assert r.status_code == 200 and r.json()["monthly_limit_usd"] is None
        async with ops.api.ctx.db.sessions() as s:
            assert (await s.get(ApiKey, created["id"])).monthly_limit_usd is None
        r = await c.patch(path, json={}, headers=ops.headers)
        assert r.status_code == 422  # the field is required (null to remove)
        r = await c.patch(path, json={"monthly_limit_usd": "-1"}, headers=ops.headers)
        assert r.status_code == 422
        other = await ops.business("Other")
        r = await c.patch(f"/businesses/{other['id']}/keys/{created['id']}",
                          json={"monthly_limit_usd": "1"}, headers=ops.headers)
        assert r.status_code == 404 and r.json()["error"] == "api_key_not_found"
        for body in ({"scopes": ["gold"]}, {"scopes": []}, {"scopes": "chat"},
                     {"monthly_limit_usd": 5.0}):
            r = await c.post(f"/businesses/{acme['id']}/keys", json=body, headers=ops.headers)
            assert r.status_code == 422, body
        r = await c.post("/businesses/999999/keys", json={}, headers=ops.headers)
        assert r.status_code == 404


async def test_every_way_in_gives_a_deposit_ref_and_old_keys_still_work(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        c = ops.api.client
        r = await c.post("/api-keys", json={"business": "legacy", "scopes": ["chat"]},
                         headers=ops.headers)
        assert r.status_code == 201, r.text
        harness_key = await ops.api.api_key("harness-made")
        assert harness_key
        async with ops.api.ctx.db.sessions() as s:
            refs = dict((await s.execute(select(Business.name, Business.deposit_ref))).all())
        assert set(refs) == {"legacy", "harness-made"} and all(len(v) == 16 for v in refs.values())
        r = await c.get("/businesses", headers=ops.headers)
        legacy = next(b for b in r.json()["items"] if b["name"] == "legacy")
        r = await c.post("/api-keys", json={"business": "legacy"}, headers=ops.headers)
        assert r.status_code == 201  # the same business, a second key
        r = await c.get(f"/businesses/{legacy['id']}/keys", headers=ops.headers)
        assert len(r.json()["keys"]) == 2


async def test_a_removed_business_is_shown_and_frozen(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        c = ops.api.client
        acme = await ops.business("Acme")
        key = await ops.key(acme["id"])
        async with ops.api.ctx.db.transaction() as s:
            await s.execute(update(Business).where(Business.id == acme["id"])
                            .values(removed_at=utcnow()))
        r = await c.get(f"/businesses/{acme['id']}", headers=ops.headers)
        assert r.status_code == 200 and r.json()["removed_at"] is not None
        r = await c.patch(f"/businesses/{acme['id']}", json={"name": "back"}, headers=ops.headers)
        assert r.status_code == 409 and r.json()["error"] == "business_removed"
        r = await c.post(f"/businesses/{acme['id']}/keys", json={}, headers=ops.headers)
        assert r.status_code == 409 and r.json()["error"] == "business_removed"
        r = await c.post("/api-keys", json={"business": "Acme"}, headers=ops.headers)
        assert r.status_code == 409 and r.json()["error"] == "business_removed"
        r = await c.patch(f"/businesses/{acme['id']}/keys/{key['id']}",
                          json={"monthly_limit_usd": "1"}, headers=ops.headers)
        assert r.status_code == 409
        r = await ops.credit(acme["id"], "5", "inv-1")
        assert r.status_code == 409
        async with ops.api.ctx.db.sessions() as s:
            b = await s.get(Business, acme["id"])
            assert b.name == "Acme" and b.balance_usd == Decimal(0)


async def test_concurrent_creations_of_one_name_make_one_business(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        answers = await asyncio.gather(*[
            ops.api.client.post("/businesses", json={"name": "Twin"}, headers=ops.headers)
            for _ in range(8)])
        assert sorted(r.status_code for r in answers) == [201] + [409] * 7, \
            [r.text for r in answers]
        assert {r.json()["error"] for r in answers if r.status_code == 409} == {"business_exists"}
        async with ops.api.ctx.db.sessions() as s:
            assert (await s.execute(select(Business.name))).scalars().all() == ["Twin"]
