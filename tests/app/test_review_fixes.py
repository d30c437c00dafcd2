"""Regressions for what a review found: tenant races, NUL bytes, signatures, HEAD, hung Redis,
SQLite readers, anonymous sessions, wait caps, reconciler order."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from sqlalchemy import select

from app.models import ChatJob
from tests.support.harness import running_app


async def test_two_businesses_racing_for_one_new_session_id(any_db, settings_factory):  # type: ignore[no-untyped-def]
    # Session ids are scoped per business: both first messages win, each in its own session.
    async with running_app(settings_factory(any_db)) as api:
        ka, kb = await api.api_key("alpha"), await api.api_key("beta")
        for i in range(15):
            sid = f"race-{i}"
            ra, rb = await asyncio.gather(api.chat(ka, f"A secret {i}", session_id=sid),
                                          api.chat(kb, f"B secret {i}", session_id=sid))
            assert [ra.status_code, rb.status_code] == [202, 202], (ra.text, rb.text)
            for key, mine in ((ka, f"A secret {i}"), (kb, f"B secret {i}")):
                r = await api.client.get(f"/chat/sessions/{sid}/messages",
                                         headers={"Authorization": f"Bearer {key}"})
                assert [m["message"] for m in r.json()["messages"]] == [mine]


async def test_nul_characters_are_422_everywhere(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = await api.miner()
        auth = {"Authorization": f"Bearer {key}"}
        assert (await api.chat(key, "a\x00b")).status_code == 422
        assert (await api.client.get("/chat/%00", headers=auth)).status_code == 422
        assert (await api.client.get("/chat/sessions/a%00b/messages", headers=auth)).status_code == 422
        await api.chat(key, "hi")
        job = await miner.next_job(wait=2)
        r = await miner.post_result(job, "x\x00y")
        assert r.status_code == 422, r.text
        assert (await miner.post_result(job, "fine")).status_code == 200


async def test_result_signatures_are_canonical_hex(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = await api.miner()
        await api.chat(key, "hi")
        job = await miner.next_job(wait=2)
        good = miner.sign_result(job["job_id"], "out")
        spaced = "0x" + " ".join(good[2:][i:i + 2] for i in range(0, 130, 2))
        assert (await miner.post_result(job, "out", signature=spaced)).status_code == 422
        r = await miner.post_result(job, "out", signature=good[2:].upper())  # no 0x, upper case
        assert r.status_code == 200, r.text
        async with api.ctx.db.sessions() as s:
            stored = (await s.execute(select(ChatJob.signature))).scalar_one()
        assert stored == good.lower()


async def test_head_on_job_next_leases_nothing(api):  # type: ignore[no-untyped-def]
    key = await api.api_key()
    miner = await api.miner()
    await api.chat(key, "hi")
    r = await api.client.head("/job/next", headers=miner.auth)
    assert r.status_code == 405
    assert (await miner.next_job(wait=1))["attempt"] == 1
    assert (await api.client.head("/health")).status_code == 200


async def test_a_hung_redis_gives_503_not_a_hung_request(settings_factory, private_redis):  # type: ignore[no-untyped-def]
    s = settings_factory(redis_url=private_redis.url, redis_command_timeout_s=0.5)
    async with running_app(s) as api:
        key = await api.api_key()
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            r = await asyncio.wait_for(api.chat(key, "anyone?"), 10)
            assert r.status_code == 503 and r.json()["error"] == "queue_unavailable"
            assert time.monotonic() - start < 5
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        async with api.ctx.db.sessions() as session:
            assert (await session.execute(select(ChatJob))).first() is None  # nothing kept


async def test_sqlite_readers_are_not_blocked_by_a_writer(api):  # type: ignore[no-untyped-def]
    key = await api.api_key()
    chat = (await api.chat(key, "hi")).json()
    async with api.ctx.db.transaction() as session:  # a writer holds the lock...
        await session.execute(select(ChatJob).with_for_update())
        session.add(ChatJob(id="x" * 36, session_id="s", prompt="p", status="queued", attempts=0))
        await session.flush()
        r = await asyncio.wait_for(api.client.get("/health"), 5)  # ...readers carry on
        assert r.status_code == 200
        r = await asyncio.wait_for(api.client.get(f"/chat/{chat['job_id']}",
                                                  headers={"Authorization": f"Bearer {key}"}), 5)
        assert r.status_code == 200


async def test_anonymous_sessions_are_capabilities(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(chat_allow_anonymous=True,
                                            chat_anon_rate_per_min=4)) as api:
        r = await api.chat(None, "my card number is 4111", session_id="visitor-1")
        assert r.status_code == 403  # anonymous callers cannot pick (guess) a session id
        first = (await api.chat(None, "hello")).json()
        again = await api.chat(None, "me again", session_id=first["session_id"])
        assert again.status_code == 202  # the id the server handed out works
        # reads do not use up the submission budget
        for _ in range(5):
            r = await api.client.get(f"/chat/{first['job_id']}")
            assert r.status_code == 200
        assert (await api.chat(None, "third")).status_code == 202  # 4th submission, refused one included
        assert (await api.chat(None, "fourth")).status_code == 429


async def test_wait_is_capped_by_settings(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(chat_max_wait_s=1, miner_max_wait_s=1)) as api:
        key = await api.api_key()
        miner = await api.miner()
        start = time.monotonic()
        assert (await api.chat(key, "hi", wait=3)).status_code == 202
        assert time.monotonic() - start < 2.5
        await miner.next_job(wait=0)
        start = time.monotonic()
        assert await miner.next_job(wait=3) is None
        assert time.monotonic() - start < 2.5


async def test_reconciler_restores_oldest_first(settings_factory):  # type: ignore[no-untyped-def]
    from app.ops.maintenance import reconcile_queue
    async with running_app(settings_factory(run_maintenance_in_api=False,
                                            reconcile_grace_s=0)) as api:
        key = await api.api_key()
        miner = await api.miner()
        ids = [(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(4)]
        await api.ctx.redis.delete(api.ctx.queue.key("chat"))
        await asyncio.sleep(0.01)
        assert await reconcile_queue(api.ctx) == 4
        got = [(await miner.next_job())["job_id"] for _ in ids]
        assert got == ids


async def test_the_reconciler_leaves_an_id_a_poll_holds_for_a_moment(settings_factory):  # type: ignore[no-untyped-def]
    """An id popped by a poll is in neither Redis nor a lease for a moment (the poll is about to
    lease it, or to put it back when the lease is refused): the reconciler must not push it
    then, or it is queued twice (an idle poll then yields to the stale copy as to waiting
    chat: the flaky returned-jobs test). A job Redis really lost is still pushed back."""
    from app.ops import maintenance
    async with running_app(settings_factory(run_maintenance_in_api=False,
                                            reconcile_grace_s=0)) as api:
        key = await api.api_key()
        held, lost = [(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(2)]
        q = api.ctx.queue
        assert sorted(await q.pop_many("chat", 2, 0)) == sorted([held, lost])  # both in flight

        async def poll_puts_it_back() -> None:  # the poll's lease was refused: back to the front
            await asyncio.sleep(maintenance.RECHECK_S / 5)
            await q.push_front("chat", held)
        back = asyncio.create_task(poll_puts_it_back())
        assert await maintenance.reconcile_queue(api.ctx) == 1  # only the lost one
        await back
        listed = [v.decode() if isinstance(v, bytes) else v
                  for v in await api.ctx.redis.lrange(q.key("chat"), 0, -1)]
        assert sorted(listed) == sorted([held, lost])  # each once
