"""Redis is the fast path, not the truth: an outage refuses new chats (503) and loses nothing."""

from __future__ import annotations

from tests.support.harness import running_app, until


async def test_redis_stopped_then_back(settings_factory, private_redis):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(redis_url=private_redis.url)) as api:
        key = await api.api_key()
        miner = await api.miner()
        before = [(await api.chat(key, f"before {i}")).json()["job_id"] for i in range(5)]

        private_redis.stop()
        r = await api.chat(key, "during the outage")
        assert r.status_code == 503 and r.json()["error"] == "queue_unavailable"
        h = await api.client.get("/health")
        assert h.status_code == 503 and h.json()["failing"] == ["redis"]
        assert (await api.client.get("/job/next", headers=miner.auth)).status_code == 503

        private_redis.start()  # same port, empty: every queued id in Redis is gone
        async def healthy() -> bool:
            return (await api.client.get("/health")).status_code == 200
        await until(healthy, 10)

        got = []
        async def drained() -> bool:
            job = await miner.next_job(wait=0.5)
            if job is not None:
                got.append(job["job_id"])
                assert (await miner.post_result(job, "ok")).status_code == 200
            return len(got) == len(before)
        await until(drained, 20)  # the reconciler put them back
        assert sorted(got) == sorted(before)

        # the refused chat left nothing behind
        from sqlalchemy import func, select

        from app.models import ChatJob, ChatLog
        async with api.ctx.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(ChatJob))).scalar_one() == 5
            assert (await s.execute(select(func.count()).where(
                ChatLog.message == "during the outage"))).scalar_one() == 0


async def test_redis_flushed_mid_run(settings_factory, private_redis):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(redis_url=private_redis.url)) as api:
        key = await api.api_key()
        miner = await api.miner()
        ids = {(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(20)}
        taken = await miner.next_job(wait=1)
        await api.ctx.redis.flushall()
        assert await api.ctx.queue.depth("chat") == 0
        done = {taken["job_id"]}
        assert (await miner.post_result(taken, "a")).status_code == 200  # leases live in the DB

        async def drained() -> bool:
            job = await miner.next_job(wait=0.5)
            if job is not None:
                assert (await miner.post_result(job, "a")).status_code == 200
                done.add(job["job_id"])
            return done == ids
        await until(drained, 20)
