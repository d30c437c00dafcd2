"""The full cycle: key -> chat -> miner sign-in -> lease -> signed result -> client reads it."""

from __future__ import annotations

import asyncio
import time

from tests.support.harness import running_app


async def test_full_cycle(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("acme")
        miner = await api.miner("gpu-1")
        started = time.perf_counter()

        r = await api.chat(key, "What are your opening hours?", context="Shop: Acme Bikes")
        assert r.status_code == 202, r.text
        queued = r.json()
        assert queued["status"] == "queued"

        job = await miner.next_job(wait=5)
        assert job is not None
        assert job["job_id"] == queued["job_id"]
        assert job["prompt"] == "What are your opening hours?"
        assert job["context"] == "Shop: Acme Bikes"
        assert job["history"] == []
        assert job["kind"] == "chat"

        waiter = asyncio.create_task(api.client.get(f"/chat/{job['job_id']}", params={"wait": 10},
                                                    headers={"Authorization": f"Bearer {key}"}))
        await asyncio.sleep(0.05)
        r = await miner.post_result(job, "We open at 9am.", tokens=5)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"

        answered = (await waiter).json()
        elapsed = time.perf_counter() - started
        assert answered["status"] == "completed"
        assert answered["response"] == "We open at 9am."
        print(f"full cycle on {any_db.split(':')[0]}: {elapsed * 1000:.1f} ms")

        # the second turn carries the first as history
        r = await api.chat(key, "And on Sunday?", session_id=queued["session_id"])
        job2 = await miner.next_job(wait=5)
        assert [h["content"] for h in job2["history"]] == ["What are your opening hours?",
                                                           "We open at 9am."]
        assert (await miner.post_result(job2, "Closed on Sundays.")).status_code == 200

        r = await api.client.get(f"/chat/sessions/{queued['session_id']}/messages",
                                 headers={"Authorization": f"Bearer {key}"})
        assert [(m["role"], m["message"]) for m in r.json()["messages"]] == [
            ("user", "What are your opening hours?"), ("assistant", "We open at 9am."),
            ("user", "And on Sunday?"), ("assistant", "Closed on Sundays.")]

        # miner bookkeeping
        from sqlalchemy import select

        from app.models import Miner
        async with api.ctx.db.sessions() as s:
            row = (await s.execute(select(Miner).where(Miner.address == miner.address))).scalar_one()
        assert row.job_count == 2
        assert row.tokens_generated == 7 + 6  # our count of the two answers, not the reports
        assert row.last_active is not None


async def test_post_chat_with_wait_returns_the_answer(api):  # type: ignore[no-untyped-def]
    key = await api.api_key()
    miner = await api.miner()

    async def answer() -> None:
        job = await miner.next_job(wait=5)
        assert (await miner.post_result(job, "pong")).status_code == 200

    task = asyncio.create_task(answer())
    r = await api.chat(key, "ping", wait=10)
    await task
    assert r.status_code == 200 and r.json()["response"] == "pong"
    assert r.json()["status"] == "completed" and r.json()["completed_at"]

    # nobody answers: after `wait` seconds the client gets 202 and the job stays queued
    r = await api.chat(key, "anyone?", wait=0.3)
    assert r.status_code == 202 and r.json()["status"] == "queued"
