"""Chat results credit the miner the server's count of the output's tokens, never its report:
through SQLAlchemy on SQLite and the raw statement of app/chat/pg.py on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from app.models import ChatJob, Miner
from tests.support.harness import Harness, SimMiner, running_app


async def _credited(api: Harness, m: SimMiner) -> tuple[int, int]:
    async with api.ctx.db.sessions() as s:
        row = (await s.execute(select(Miner).where(Miner.address == m.address))).scalar_one()
    return row.job_count, row.tokens_generated


async def test_a_report_of_a_million_tokens_credits_our_count(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = await api.miner()
        sent = (await api.chat(key, "when did it begin?")).json()["job_id"]
        job = await miner.next_job(wait=2)
        r = await miner.post_result(job, "It began in 1789.", tokens=10**6)
        assert r.status_code == 200, r.text
        assert r.json()["output_tokens"] == 9  # Mixtral's tokenizer, not the report
        assert await _credited(api, miner) == (1, 9)
        async with api.ctx.db.sessions() as s:
            row = await s.get(ChatJob, sent)
        assert (row.output_tokens, row.reported_tokens) == (9, 10**6)
        # the same result again answers the same, and credits nothing more
        again = await miner.post_result(job, "It began in 1789.", tokens=10**6)
        assert again.status_code == 200 and again.json()["output_tokens"] == 9
        assert await _credited(api, miner) == (1, 9)


async def test_a_batch_credits_our_count_and_keeps_each_report(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = await api.miner()
        for i in range(3):
            await api.chat(key, f"q{i}")
        r = await miner.client.get("/job/batch", params={"max": 3}, headers=miner.auth)
        jobs = r.json()["jobs"]
        outputs = ("x", "It began in 1789.", "three little words")  # 1, 9 and 3 tokens
        reported = (10**6, None, 3)
        items = [{"job_id": j["job_id"], "lease_id": j["lease_id"], "output": out,
                  "output_tokens": n, "signature": miner.sign_result(j["job_id"], out)}
                 for j, out, n in zip(jobs, outputs, reported, strict=True)]
        r = await miner.client.post("/job/results", json={"results": items}, headers=miner.auth)
        assert [o["status"] for o in r.json()["results"]] == ["completed"] * 3
        assert await _credited(api, miner) == (3, 13)
        async with api.ctx.db.sessions() as s:
            rows = (await s.execute(select(ChatJob.response, ChatJob.output_tokens,
                                           ChatJob.reported_tokens))).all()
        assert sorted(rows) == sorted([("x", 1, 10**6), ("It began in 1789.", 9, None),
                                       ("three little words", 3, 3)])
