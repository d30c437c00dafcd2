"""At-least-once delivery with leases; at-most-once completion; only the current lease wins."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import func, select

from app.models import ChatJob, ChatLog
from tests.support.harness import running_app


async def test_vanished_miner_job_is_redelivered_and_completed_once(settings_factory):
    async with running_app(settings_factory(lease_seconds=1)) as api:
        key = await api.api_key()
        ghost, worker = await api.miner(), await api.miner()
        chat = (await api.chat(key, "hi")).json()

        taken = await ghost.next_job(wait=2)  # ...and the ghost never answers
        assert taken["job_id"] == chat["job_id"] and taken["attempt"] == 1
        assert await worker.next_job(wait=0) is None  # leased: nobody else gets it meanwhile

        again = await worker.next_job(wait=5)  # after the lease expires
        assert again["job_id"] == chat["job_id"] and again["attempt"] == 2
        assert again["lease_id"] != taken["lease_id"]
        assert (await worker.post_result(again, "answer")).status_code == 200

        late = await ghost.post_result(taken, "too late")
        assert late.status_code == 409, late.text
        r = await api.client.get(f"/chat/{chat['job_id']}", headers={"Authorization": f"Bearer {key}"})
        assert r.json()["response"] == "answer"


async def test_200_jobs_10_miners_some_vanish_every_job_completed_exactly_once(settings_factory):
    rng = random.Random(7)
    async with running_app(settings_factory(lease_seconds=1, max_attempts=10)) as api:
        key = await api.api_key()
        job_ids = set()
        for i in range(200):
            r = await api.chat(key, f"question {i}")
            assert r.status_code == 202
            job_ids.add(r.json()["job_id"])
        miners = [await api.miner(f"m{i}") for i in range(10)]
        flaky = {id(m) for m in miners[:4]}  # these drop 30% of what they take
        accepted: list[str] = []

        async def work(m) -> None:  # type: ignore[no-untyped-def]
            idle_rounds = 0
            while idle_rounds < 3:
                job = await m.next_job(wait=1.5)
                if job is None:
                    idle_rounds += 1
                    continue
                idle_rounds = 0
                if id(m) in flaky and rng.random() < 0.3:
                    continue  # vanished with the lease
                r = await m.post_result(job, f"answer to {job['prompt']}")
                if r.status_code == 200:
                    accepted.append(job["job_id"])
                else:
                    assert r.status_code == 409, r.text

        await asyncio.wait_for(asyncio.gather(*(work(m) for m in miners)), 120)

        assert sorted(accepted) == sorted(job_ids)  # each accepted exactly once
        async with api.ctx.db.sessions() as s:
            statuses = dict((await s.execute(
                select(ChatJob.status, func.count()).group_by(ChatJob.status))).all())
            answers = (await s.execute(
                select(ChatLog.job_id, func.count()).where(ChatLog.role == "assistant")
                .group_by(ChatLog.job_id))).all()
            redelivered = (await s.execute(
                select(func.count()).where(ChatJob.attempts > 1))).scalar_one()
        assert statuses == {"completed": 200}
        assert len(answers) == 200 and all(n == 1 for _, n in answers)
        assert redelivered > 0  # the vanishing really happened


async def test_two_leases_race_exactly_one_wins(settings_factory):
    async with running_app(settings_factory(lease_seconds=1)) as api:
        key = await api.api_key()
        a, b = await api.miner(), await api.miner()
        await api.chat(key, "race")
        first = await a.next_job(wait=2)
        second = await b.next_job(wait=5)  # redelivered after a's lease expired
        assert second["job_id"] == first["job_id"]
        ra, rb = await asyncio.gather(a.post_result(first, "from a"),
                                      b.post_result(second, "from b"))
        assert sorted([ra.status_code, rb.status_code]) == [200, 409]
        assert rb.status_code == 200  # only the current lease can complete

        # The same lease posting twice at once: one completion, the same 200 body twice.
        await api.chat(key, "twice")
        job = await a.next_job(wait=2)
        r1, r2 = await asyncio.gather(a.post_result(job, "same"), a.post_result(job, "same"))
        assert r1.status_code == r2.status_code == 200
        assert r1.json() == r2.json()
        r3 = await a.post_result(job, "different output")
        assert r3.status_code == 409 and r3.json()["error"] == "already_completed"
        async with api.ctx.db.sessions() as s:
            n = (await s.execute(select(func.count()).where(
                ChatLog.job_id == job["job_id"], ChatLog.role == "assistant"))).scalar_one()
        assert n == 1


async def test_job_fails_with_reason_after_max_attempts(settings_factory):
    async with running_app(settings_factory(lease_seconds=1, max_attempts=2)) as api:
        key = await api.api_key()
        m, other = await api.miner(), await api.miner()
        chat = (await api.chat(key, "doomed")).json()
        assert (await m.next_job(wait=2))["attempt"] == 1
        # the next delivery goes to another miner (RETURNED_JOB_COOLDOWN_S)
        assert (await other.next_job(wait=5))["attempt"] == 2
        r = await api.client.get(f"/chat/{chat['job_id']}", params={"wait": 5},
                                 headers={"Authorization": f"Bearer {key}"})
        body = r.json()
        assert body["status"] == "failed"
        assert "2 deliveries" in body["failure_reason"]
        assert await m.next_job(wait=1.5) is None


async def test_extend_keeps_the_lease_and_release_redelivers(settings_factory):
    # 2 s leases extended every 1.2 s: kept for 3.6 s, past one lease, with 0.8 s of margin per
    # extension (1 s leases every 0.6 s expired once on a loaded machine)
    async with running_app(settings_factory(lease_seconds=2)) as api:
        key = await api.api_key()
        a, b = await api.miner(), await api.miner()
        await api.chat(key, "long generation")
        job = await a.next_job(wait=2)
        for _ in range(3):
            await asyncio.sleep(1.2)
            r = await api.client.post(f"/job/{job['job_id']}/extend",
                                      json={"lease_id": job["lease_id"]}, headers=a.auth)
            assert r.status_code == 200, r.text
        assert await b.next_job(wait=0) is None  # still a's after 3.6 s
        r = await api.client.post(f"/job/{job['job_id']}/extend",
                                  json={"lease_id": job["lease_id"]}, headers=b.auth)
        assert r.status_code == 409  # not b's lease

        r = await api.client.post(f"/job/{job['job_id']}/release",
                                  json={"lease_id": job["lease_id"], "reason": "model crashed"},
                                  headers=a.auth)
        assert r.json() == {"job_id": job["job_id"], "status": "queued"}
        again = await b.next_job(wait=2)
        assert again["job_id"] == job["job_id"]
        assert (await b.post_result(again, "done")).status_code == 200
