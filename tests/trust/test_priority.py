"""When several wallets wait for the next job, the better-scored one leases it first."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from app.models import Miner
from tests.support.harness import running_app
from tests.trust.support import trust_settings


async def test_a_better_scored_wallet_leases_first(settings_factory, any_db) -> None:
    settings = trust_settings(settings_factory, any_db, lease_priority_delay_s=0.5)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        low, high = await api.miner(), await api.miner()
        async with api.ctx.db.transaction() as s:  # low: 1 pass, 8 failures -> score 0.18
            await s.execute(update(Miner).where(Miner.address == low.address)
                            .values(rep_passed=1.0, rep_failed=8.0))
        first = asyncio.create_task(low.next_job(wait=3))  # it starts waiting first
        await asyncio.sleep(0.05)
        second = asyncio.create_task(high.next_job(wait=3))
        await asyncio.sleep(0.1)
        job_id = (await api.chat(key, "who gets me?")).json()["job_id"]
        got = await second
        assert got is not None and got["job_id"] == job_id
        job_id = (await api.chat(key, "and me?")).json()["job_id"]
        got = await first
        assert got is not None and got["job_id"] == job_id
