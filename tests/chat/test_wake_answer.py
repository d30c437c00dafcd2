"""The answer in the wake-up (issue 20): a completion's message carries what the waiter shows
(app/notify.py ANSWERS), so POST /chat?wait, GET /chat/{id}?wait and /v1 answer without reading
the job back. Lost message: the waiter's re-read still answers. A failure is only a wake-up: the
waiter reads it, reason included. Another business still cannot see the job."""

from __future__ import annotations

import asyncio

import pytest

from app import notify
from app.chat import service
from app.models import ChatJob
from tests.openai_api.support import Miner
from tests.support.harness import running_app, until


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of a chat job by id (what a waiter does on a wake-up without an answer)."""
    seen: list[str] = []
    real = service.get_owned

    async def counted(ctx, client, job_id):  # type: ignore[no-untyped-def]
        seen.append(job_id)
        return await real(ctx, client, job_id)
    monkeypatch.setattr(service, "get_owned", counted)
    return seen


async def _at_least(seen: list[str], n: int) -> bool:
    return len(seen) >= n


async def test_the_waiter_gets_the_answer_from_the_wake_up(any_db, settings_factory, reads):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = Miner(await api.miner(), None)
        waiting = asyncio.create_task(api.chat(key, "opening hours?", wait=10))
        job = await miner.poll(5)
        assert job is not None
        get_wait = asyncio.create_task(api.client.get(
            f"/chat/{job['job_id']}", params={"wait": 10},
            headers={"Authorization": f"Bearer {key}"}))
        # GET reads the job (owner check), and once more once it listens (a completion between
        # the two would otherwise go unheard); then both wait
        await until(lambda: _at_least(reads, 2))
        await asyncio.sleep(0.1)
        reads.clear()
        await miner.finish(job, "nine to five", "stop")
        posted, got = await waiting, await get_wait
        assert reads == []  # neither waiter read the job back
        assert posted.status_code == 200 and got.status_code == 200
        assert posted.json()["response"] == "nine to five" == got.json()["response"]
        # the answer is the one a read gives, field for field
        fresh = await api.client.get(f"/chat/{job['job_id']}",
                                     headers={"Authorization": f"Bearer {key}"})
        assert posted.json() == got.json() == fresh.json()


async def test_a_lost_wake_up_still_answers_from_the_database(any_db, settings_factory, reads,  # type: ignore[no-untyped-def]
                                                              monkeypatch):
    monkeypatch.setattr(notify, "RECHECK_S", 0.3)
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = await api.miner()

        async def lost(*ids, answers=None):  # type: ignore[no-untyped-def]
            return None
        monkeypatch.setattr(api.ctx.queue, "publish_done", lost)
        waiting = asyncio.create_task(api.chat(key, "q", wait=10))
        job = await miner.next_job(wait=5)
        assert (await miner.post_result(job, "the answer")).status_code == 200
        r = await waiting
        assert r.status_code == 200 and r.json()["response"] == "the answer"
        assert reads  # the re-read found it


async def test_a_failed_job_wakes_its_waiter_with_the_reason(any_db, settings_factory, reads):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db, max_attempts=1)) as api:
        key = await api.api_key()
        miner = await api.miner()
        waiting = asyncio.create_task(api.chat(key, "q", wait=10))
        job = await miner.next_job(wait=5)
        r = await miner.client.post(f"/job/{job['job_id']}/release",
                                    json={"lease_id": job["lease_id"], "reason": "cannot"},
                                    headers=miner.auth)
        assert r.status_code == 200 and r.json()["status"] == "failed"
        r = await waiting
        assert r.status_code == 200 and r.json()["status"] == "failed"
        assert "no miner could answer" in r.json()["failure_reason"]
        assert reads  # a failure carries no answer: read


async def test_v1_answers_from_the_wake_up(any_db, settings_factory, reads):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = Miner(await api.miner(), "m-1")
        assert await miner.poll(0) is None  # declares the model
        asked = asyncio.create_task(api.client.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
            json={"model": "m-1", "messages": [{"role": "user", "content": "hi"}]}))
        job = await miner.poll(5)
        assert job is not None
        await miner.finish(job, "hello there", "length")
        r = await asked
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == "hello there"
        assert body["choices"][0]["finish_reason"] == "length"
        assert reads == []
        async with api.ctx.db.sessions() as session:
            stored = await session.get(ChatJob, job["job_id"])
        assert body["usage"]["completion_tokens"] == stored.output_tokens > 0


async def test_an_answer_is_never_shown_to_another_business(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        mine, theirs = await api.api_key("alpha"), await api.api_key("beta")
        miner = await api.miner()
        job_id = (await api.chat(mine, "secret")).json()["job_id"]
        peeking = asyncio.create_task(api.client.get(
            f"/chat/{job_id}", params={"wait": 3}, headers={"Authorization": f"Bearer {theirs}"}))
        job = await miner.next_job(wait=5)
        assert (await miner.post_result(job, "the secret answer")).status_code == 200
        r = await peeking
        assert r.status_code == 404 and "secret" not in r.text
