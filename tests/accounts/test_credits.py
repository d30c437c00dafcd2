"""Operator credits are idempotent on their reference (also under concurrency), refunds and
adjustments are the same path with another kind, and the ledger pages newest first."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import func, select

from app.accounts import ledger
from app.accounts.credits import credit_business
from app.models import Business, LedgerEntry
from tests.accounts.support import operating


async def _ledger_count(ops, business_id: int) -> int:  # type: ignore[no-untyped-def]
    async with ops.api.ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(LedgerEntry)
                                    .where(LedgerEntry.business_id == business_id))).scalar_one())


async def test_a_reference_credits_once(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        acme = await ops.business("Acme")
        first = await ops.credit(acme["id"], "25.00", "inv-1", note="January invoice")
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        body = first.json()
        assert body["balance_usd"] == "25.000000"
        assert body["entry"]["kind"] == "topup" and body["entry"]["amount_usd"] == "25.000000"
        assert body["entry"]["reference"] == "inv-1" and body["entry"]["note"] == "January invoice"
        assert body["entry"]["actor"].startswith("0x")

        again = await ops.credit(acme["id"], "25", "inv-1")
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["entry"] == body["entry"]
        assert again.json()["balance_usd"] == "25.000000"

        other = await ops.credit(acme["id"], "30", "inv-1")
        assert other.status_code == 409 and other.json()["error"] == "reference_reused"
        assert await _ledger_count(ops, acme["id"]) == 1

        r = await ops.credit(acme["id"], "0.000001", "inv-2")
        assert r.status_code == 201 and r.json()["balance_usd"] == "25.000001"
        # the same reference on another business is that business's own payment
        other_biz = await ops.business("Other")
        r = await ops.credit(other_biz["id"], "30", "inv-1")
        assert r.status_code == 201 and r.json()["balance_usd"] == "30.000000"

        for bad in ("0", "-5", "1.0000001", "1000000.01", "NaN", "Infinity", 5.5, "x", "", True):
            r = await ops.credit(acme["id"], bad, "inv-bad")  # type: ignore[arg-type]
            assert r.status_code == 422, (bad, r.text)
        for ref in ("", "has space", "x" * 256, None):
            r = await ops.credit(acme["id"], "1", ref)  # type: ignore[arg-type]
            assert r.status_code == 422, ref
        r = await ops.credit(999999, "1", "inv-9")
        assert r.status_code == 404 and r.json()["error"] == "business_not_found"
        async with ops.api.ctx.db.sessions() as s:
            assert await ledger.sum_of_entries(s, acme["id"]) == Decimal("25.000001")
            assert await ledger.balance(s, acme["id"]) == Decimal("25.000001")


async def test_ten_concurrent_identical_credits_credit_once(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        acme = await ops.business("Acme")
        answers = await asyncio.gather(*[ops.credit(acme["id"], "10.50", "wire-7")
                                         for _ in range(10)])
        assert sorted(r.status_code for r in answers) == [200] * 9 + [201], \
            [r.text for r in answers]
        assert len({r.json()["entry"]["id"] for r in answers}) == 1
        # the service itself, concurrently on separate transactions: the same
        results = await asyncio.gather(*[
            credit_business(ops.api.ctx.db, acme["id"], Decimal("2"), reference="wire-8",
                            actor="test") for _ in range(10)])
        assert sum(r.created for r in results) == 1
        assert await _ledger_count(ops, acme["id"]) == 2
        async with ops.api.ctx.db.sessions() as s:
            assert (await s.get(Business, acme["id"])).balance_usd == Decimal("12.500000")
            assert await ledger.sum_of_entries(s, acme["id"]) == Decimal("12.500000")


async def test_refunds_adjustments_and_the_ledger_pages(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        c = ops.api.client
        acme = await ops.business("Acme")
        await ops.credit(acme["id"], "10", "inv-1")
        r = await ops.credit(acme["id"], "2.5", "ticket-9", path="refunds")
        assert r.status_code == 201 and r.json()["entry"]["kind"] == "refund"
        r = await ops.credit(acme["id"], "-1.25", "fix-1", path="adjustments", note="double charge")
        assert r.status_code == 201, r.text
        assert r.json()["entry"]["kind"] == "adjustment" and r.json()["balance_usd"] == "11.250000"
        r = await ops.credit(acme["id"], "-1.25", "fix-1", path="adjustments", note="again")
        assert r.status_code == 200  # idempotent too
        for body_note, amount in ((None, "1"), ("why", "0")):
            r = await ops.credit(acme["id"], amount, "fix-2", path="adjustments", note=body_note)
            assert r.status_code == 422  # a note is required, zero is no adjustment
        r = await ops.credit(acme["id"], "-1", "x", path="refunds")
        assert r.status_code == 422  # refunds give money back

        for i in range(4):
            await ops.credit(acme["id"], "1", f"inv-p{i}")
        path = f"/businesses/{acme['id']}/ledger"
        r = await c.get(path, params={"limit": 3}, headers=ops.headers)
        page = r.json()
        refs = [e["reference"] for e in page["items"]]
        assert refs == ["inv-p3", "inv-p2", "inv-p1"] and page["next_before"]
        r = await c.get(path, params={"limit": 3, "before": page["next_before"]},
                        headers=ops.headers)
        assert [e["reference"] for e in r.json()["items"]] == ["inv-p0", "fix-1", "ticket-9"]
        r = await c.get(path, params={"limit": 3, "before": r.json()["next_before"]},
                        headers=ops.headers)
        assert [e["reference"] for e in r.json()["items"]] == ["inv-1"]
        assert r.json()["next_before"] is None
        for params in ({"limit": 0}, {"limit": 201}, {"before": "x"}, {"before": 0}):
            r = await c.get(path, params=params, headers=ops.headers)
            assert r.status_code == 422, params
        r = await c.get("/businesses/999999/ledger", headers=ops.headers)
        assert r.status_code == 404
