"""GET /usage: a business's completed jobs grouped in SQL by day, key, model and kind, with
tokens from the job rows and cost from the ledger's charges; JSON and CSV; trust checks,
other businesses, failed jobs and jobs outside the range never count."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from app.accounts import ledger
from app.accounts.ledger import JobRef
from app.models import ChatJob, IdleJob, JobStatus, utcnow
from tests.accounts.support import operating
from tests.idle.support import auth

PRICE = Decimal("2")  # USD per 1k tokens: 100 tokens cost 0.2
D1 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
D2 = datetime(2026, 11, 2, 23, 59, 59, tzinfo=UTC)
BEFORE = datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)
RANGE = {"from": "2026-11-01", "to": "2026-11-03"}


async def _jobs(ops, business_id: int, other_id: int, k1: int, k2: int) -> None:  # type: ignore[no-untyped-def]
    async with ops.api.ctx.db.transaction() as s:
        async def chat(completed: datetime, tokens: int, *, key: int | None = k1,
                       model: str | None = "m1", charge: bool = True, business: int = business_id,
                       status: str = JobStatus.completed, purpose: str | None = None) -> None:
            job = ChatJob(id=str(uuid.uuid4()), session_id="s", prompt="p", business_id=business,
                          status=status, completed_at=completed, output_tokens=tokens,
                          model=model, api_key_id=key, purpose=purpose, created_at=completed)
            s.add(job)
            await s.flush()
            if charge:
                ref = JobRef("chat", job.id)
                await ledger.hold(s, business, ref, Decimal("5"), tokens=2500,
                                  price_per_1k_usd=PRICE, api_key_id=key)
                await ledger.settle(s, ref, tokens)

        await chat(D1, 100)  # 0.2
        await chat(D1, 50, model=None)  # 'default', 0.1
        await chat(D2, 200, key=k2, charge=False)  # not priced: 0
        idle = IdleJob(prompt="p", status=JobStatus.completed, completed_at=D2, output_tokens=300,
                       business_id=business_id, api_key_id=k2, created_at=D2)
        s.add(idle)
        await s.flush()
        ref = JobRef("idle", str(idle.id))
        await ledger.hold(s, business_id, ref, Decimal("5"), tokens=2500, price_per_1k_usd=PRICE,
                          api_key_id=k2)
        await ledger.settle(s, ref, 300)  # 0.6
        # none of these is the business's usage in the range
        await chat(D1, 1000, purpose="verify", charge=False)
        await chat(D1, 1000, status=JobStatus.failed, charge=False)
        await chat(D1, 1000, business=other_id, key=None)
        await chat(BEFORE, 1000)
        s.add(IdleJob(prompt="p", status=JobStatus.completed, completed_at=D1, output_tokens=7,
                      business_id=other_id))


async def test_usage_groups(settings_factory, any_db):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, any_db) as ops:
        c = ops.api.client
        acme = await ops.business("Acme")
        other = await ops.business("Other")
        k1 = await ops.key(acme["id"], ["chat"])
        k2 = await ops.key(acme["id"], ["chat", "idle"])
        for b in (acme, other):
            await ops.credit(b["id"], "100", "inv-1")
        await _jobs(ops, acme["id"], other["id"], k1["id"], k2["id"])
        headers = auth(k2["key"])

        async def rows(group_by: str) -> list[tuple[str, int, int, str]]:
            r = await c.get("/usage", params={**RANGE, "group_by": group_by}, headers=headers)
            assert r.status_code == 200, r.text
            return [(x["group"], x["jobs"], x["output_tokens"], x["cost_usd"])
                    for x in r.json()["rows"]]

        assert await rows("day") == [("2026-11-01", 2, 150, "0.300000"),
                                     ("2026-11-02", 2, 500, "0.600000")]
        assert await rows("key") == [(k1["prefix"], 2, 150, "0.300000"),
                                     (k2["prefix"], 2, 500, "0.600000")]
        assert await rows("model") == [("default", 1, 50, "0.100000"), ("idle", 1, 300, "0.600000"),
                                       ("m1", 2, 300, "0.200000")]
        assert await rows("kind") == [("chat", 3, 350, "0.300000"), ("idle", 1, 300, "0.600000")]

        r = await c.get("/usage", params=RANGE, headers=headers)  # day by default
        body = r.json()
        assert body["group_by"] == "day" and body["total_jobs"] == 4
        assert body["total_output_tokens"] == 650 and body["total_cost_usd"] == "0.900000"
        assert body["start"].startswith("2026-11-01T00:00:00")
        # the cost is what the ledger charged this business for these jobs (acme's charges this
        # month in the ledger: the four above and the one before the range)
        async with ops.api.ctx.db.sessions() as s:
            assert await ledger.balance(s, acme["id"]) == Decimal("100") - Decimal("0.9") - Decimal("2")

        r = await c.get("/usage", params={**RANGE, "group_by": "kind"},
                        headers={**headers, "Accept": "text/csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert list(csv.reader(io.StringIO(r.text))) == [
            ["group", "jobs", "output_tokens", "cost_usd"], ["chat", "3", "350", "0.300000"],
            ["idle", "1", "300", "0.600000"]]

        # a narrower range, with datetimes and an offset: only D1's jobs (10:00 UTC)
        r = await c.get("/usage", params={"from": "2026-11-01T11:30:00+02:00",
                                          "to": "2026-11-01T12:00:01+02:00"}, headers=headers)
        assert [(x["group"], x["jobs"]) for x in r.json()["rows"]] == [("2026-11-01", 2)]
        # the other business sees its own
        okey = await ops.key(other["id"])
        r = await c.get("/usage", params={**RANGE, "group_by": "kind"}, headers=auth(okey["key"]))
        assert [(x["group"], x["jobs"], x["output_tokens"]) for x in r.json()["rows"]] == [
            ("chat", 1, 1000), ("idle", 1, 7)]


async def test_usage_range_defaults_and_errors(settings_factory, sqlite_url):  # type: ignore[no-untyped-def]
    async with operating(settings_factory, sqlite_url) as ops:
        c = ops.api.client
        acme = await ops.business("Acme")
        key = await ops.key(acme["id"])
        async with ops.api.ctx.db.transaction() as s:
            s.add(ChatJob(id=str(uuid.uuid4()), session_id="s", prompt="p", business_id=acme["id"],
                          status=JobStatus.completed, completed_at=utcnow(), output_tokens=3))
        r = await c.get("/usage", headers=auth(key["key"]))  # this month
        assert r.status_code == 200 and r.json()["total_jobs"] == 1
        assert r.json()["rows"][0]["group"] == utcnow().date().isoformat()
        r = await c.get("/usage", headers={**auth(key["key"]), "Accept": "text/csv"})
        assert r.text.splitlines()[1].endswith(",1,3,0.000000")

        bad = [({"from": "2026-11-02", "to": "2026-11-01"}, 400),
               ({"from": "2026-11-01", "to": "2026-11-01"}, 400),
               ({"from": "2025-01-01", "to": "2026-11-01"}, 400),
               ({"from": "0001-01-01T00:00:00+01:00"}, 400),
               ({"from": "yesterday"}, 422), ({"group_by": "week"}, 422),
               ({"to": "2026-13-01"}, 422)]
        for params, status in bad:
            r = await c.get("/usage", params=params, headers=auth(key["key"]))
            assert r.status_code == status, (params, r.text)
            assert r.json()["error"]
        assert (await c.get("/usage")).status_code == 401
