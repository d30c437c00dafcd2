"""Shared steps of the trust tests: settings with the checks on, reading jobs and records."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.models import ChatJob, Miner
from tests.support.harness import Harness, SimMiner

ANSWER = "We open at nine in the morning and close at six in the evening every weekday"


def trust_settings(settings_factory: Any, db: str, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(tokenizer="words", verify_sample_rate=0.0, canary_rate=0.0,
                                  probation_jobs=0, lease_priority_delay_s=0.0)
    values.update(overrides)
    return settings_factory(db, **values)


async def job_row(api: Harness, job_id: str) -> ChatJob:
    async with api.ctx.db.sessions() as s:
        return (await s.execute(select(ChatJob).where(ChatJob.id == job_id))).scalar_one()


async def check_jobs(api: Harness) -> list[ChatJob]:
    async with api.ctx.db.sessions() as s:
        return list((await s.execute(select(ChatJob).where(ChatJob.purpose.is_not(None))
                                     .order_by(ChatJob.created_at))).scalars().all())


async def miner_row(api: Harness, miner: SimMiner) -> Miner:
    async with api.ctx.db.sessions() as s:
        return (await s.execute(select(Miner).where(Miner.address == miner.address))).scalar_one()


async def record(api: Harness, miner: SimMiner) -> dict[str, Any]:
    r = await api.client.get(f"/miners/{miner.address}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def announce(*miners: SimMiner) -> None:
    """Each miner polls once, so the network knows it can answer check jobs."""
    for m in miners:
        assert await m.next_job(wait=0) is None


async def answer_next(miner: SimMiner, text: str, wait: float = 3) -> dict[str, Any]:
    job = await miner.next_job(wait=wait)
    assert job is not None, "no job came"
    r = await miner.post_result(job, text)
    assert r.status_code == 200, r.text
    return job
