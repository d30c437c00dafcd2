"""Revenue is what businesses were charged, one source of truth: after a mix of idle jobs (miner
and RunPod), priced chat, failures and releases, SUM(charges) is the revenue /burns/summary and
/metrics show, to the micro-dollar, and every charge is one RevenueEvent."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import func, select

from app.models import LedgerEntry
from tests.accounts.ledger_support import check_invariants
from tests.idle.support import (auth, get_job, next_idle, post_idle_result, running_worker,
                                runpod_settings)
from tests.support.harness import until
from tests.treasury.conftest import treasury_app


async def _charged(api) -> tuple[Decimal, dict[str, Decimal]]:  # type: ignore[no-untyped-def]
    """(-SUM(charges), the same by job kind), straight from the ledger."""
    async with api.ctx.db.sessions() as s:
        rows = (await s.execute(select(LedgerEntry.job_kind, func.sum(LedgerEntry.amount_usd))
                                .where(LedgerEntry.kind == "charge")
                                .group_by(LedgerEntry.job_kind))).all()
    by_kind = {kind: -Decimal(total) for kind, total in rows}
    return sum(by_kind.values(), Decimal(0)), by_kind


async def test_revenue_is_the_sum_of_charges(any_db, treasury_settings, devnet_layout,  # type: ignore[no-untyped-def]
                                             operator, runpod_standin):
    settings = treasury_settings(any_db, chat_price_per_1k_tokens_usd=Decimal("0.01"),
                                 max_attempts=1, **runpod_settings(
                                     runpod_standin, idle_to_runpod_after_s=60,
                                     runpod_max_tries=1))
    async with treasury_app(settings, devnet_layout, operator) as t:
        api = t.api
        idle_key = await api.api_key("outside-co", "idle", funds=Decimal("1"))
        chat_key = await api.api_key("shop", "chat", funds=Decimal("1"))
        miner = await api.miner()

        async def idle(max_tokens: int = 100) -> str:
            r = await api.client.post("/idle-job", headers=auth(idle_key), json={
                "prompt": "one two three", "max_tokens": max_tokens})
            assert r.status_code == 202, r.text
            return r.json()["job_id"]

        # idle, by a miner: one completed, one given back on its last delivery (failed)
        for output in ("It began in 1789.", None):
            await idle()
            job = await next_idle(miner, wait=2)
            if output is not None:
                assert (await post_idle_result(miner, job, output)).status_code == 200
            else:
                r = await miner.client.post(f"/idle-job/{job['job_id']}/release",
                                            headers=miner.auth,
                                            json={"lease_id": job["lease_id"], "reason": "x"})
                assert r.json()["status"] == "failed"
        # priced chat: one answered, one failed
        for output in ("We open at nine.", None):
            r = await api.chat(chat_key, "When do you open?")
            assert r.status_code == 202, r.text
            job = await miner.next_job(wait=2)
            if output is not None:
                assert (await miner.post_result(job, output)).status_code == 200
            else:
                r = await miner.client.post(f"/job/{job['job_id']}/release", headers=miner.auth,
                                            json={"lease_id": job["lease_id"], "reason": "x"})
                assert r.json()["status"] == "failed"
        # idle on RunPod (operator sends it there): one completed, one failed
        operator_auth = await t.operator_auth()
        async with running_worker(settings):
            for fail in (False, True):
                runpod_standin.set_mode(fail=fail)
                job_id = await idle(max_tokens=50)
                r = await api.client.post(f"/idle-job/process/{job_id}", headers=operator_auth)
                assert r.status_code == 202, r.text

                async def finished(job_id: str = job_id) -> bool:
                    body = await get_job(api, idle_key, job_id, wait=1)
                    return body["status"] in ("completed", "failed")
                await until(finished, 20)
        # and one idle job still open: held, not charged, not revenue
        await idle()

        total, by_kind = await _charged(api)
        assert set(by_kind) == {"idle", "chat"} and all(v > 0 for v in by_kind.values())
        summary = (await api.client.get("/burns/summary")).json()
        assert Decimal(summary["revenue_usd"]) == total
        assert Decimal(summary["unallocated_usd"]) == total and summary["ledger_reconciled"]
        metrics = (await api.client.get("/metrics", headers={"Accept": "application/json"})).json()
        assert Decimal(metrics["revenue_usd"]) == total
        assert Decimal(metrics["runpod_income_usd"]) == by_kind["idle"]
        assert Decimal(metrics["chat_revenue_usd"]) == by_kind["chat"]
        assert sum(Decimal(v) for v in metrics["idle_revenue_usd_by_source"].values()) \
            == by_kind["idle"]
        assert Decimal(metrics["unallocated_revenue_usd"]) == total
        assert metrics["total_idle_jobs_processed"] == 2
        await check_invariants(api)
        await asyncio.sleep(0)
