"""Idempotency-Key on POST /chat, POST /v1/chat/completions and POST /idle-job (app/idempotency.py):
a client whose connection dropped after its job committed retries with the same key and gets
that job, not a second one. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from app.models import ChatJob, ChatLog, IdempotencyKey, IdleJob, utcnow
from jobs.idempotency_tasks import prune_idempotency_keys
from tests.support.harness import Harness, running_app
from tests.support.services import delete_keys

MODEL = "mia-idem-7b"


def headers(api_key: str | None, idem: str | None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if idem is not None:
        h["Idempotency-Key"] = idem
    return h


async def chat(api: Harness, api_key: str | None, idem: str | None, message: str = "hello",
               wait: float = 0, **body: Any) -> httpx.Response:
    return await api.client.post("/chat", json={"message": message, **body},
                                 params={"wait": wait}, headers=headers(api_key, idem))


async def count(api: Harness, model: Any) -> int:
    async with api.ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_retry_with_the_same_key_gets_the_same_chat_job(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key, other = await api.api_key("alpha", scopes="chat,idle"), await api.api_key("beta")
        idem = str(uuid.uuid4())
        first = await chat(api, key, idem, "where is my order?", session_id="s-1")
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers
        again = await chat(api, key, idem, "where is my order?", session_id="s-1")
        assert again.status_code == 202, again.text
        assert again.json()["job_id"] == first.json()["job_id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert await count(api, ChatJob) == 1
        assert await api.ctx.queue.members("chat") == {first.json()["job_id"]}  # queued once
        # the same key with another request is refused, and creates nothing
        for changed in (dict(message="where is my parcel?", session_id="s-1"),
                        dict(message="where is my order?", session_id="s-2"),
                        dict(message="where is my order?")):
            r = await chat(api, key, idem, **changed)
            assert r.status_code == 409 and r.json()["error"] == "idempotency_key_reused", r.text
        # the same key on another endpoint is another request too
        r = await api.client.post("/idle-job", json={"prompt": "where is my order?",
                                                     "max_tokens": 8}, headers=headers(key, idem))
        assert r.status_code == 409 and r.json()["error"] == "idempotency_key_reused", r.text
        # keys belong to their business: another's same key is a new request
        r = await chat(api, other, idem, "where is my order?", session_id="s-1")
        assert r.status_code == 202 and r.json()["job_id"] != first.json()["job_id"]
        # without a key every request is a new job, as before
        a, b = await chat(api, key, None), await chat(api, key, None)
        assert a.json()["job_id"] != b.json()["job_id"]
        assert await count(api, ChatJob) == 4


async def test_a_waiting_retry_gets_the_first_jobs_answer(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        miner = await api.miner()
        first = await chat(api, key, "order-4417", "is 4417 late?")  # its client hangs up
        job = await miner.next_job(wait=2)
        assert job is not None and job["job_id"] == first.json()["job_id"]
        retry = asyncio.create_task(chat(api, key, "order-4417", "is 4417 late?", wait=10))
        await asyncio.sleep(0.2)  # the retry waits on the first job
        assert not retry.done()
        assert (await miner.post_result(job, "It ships tomorrow.")).status_code == 200
        r = await retry
        assert r.status_code == 200, r.text
        assert r.json()["job_id"] == job["job_id"] and r.json()["response"] == "It ships tomorrow."
        assert await count(api, ChatJob) == 1
        assert await miner.next_job(wait=0) is None  # nothing else was queued


async def test_concurrent_requests_with_one_key_create_one_job(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("racer", scopes="chat,idle")
        for round_ in range(3):
            idem = f"race-{round_}"
            rs = await asyncio.gather(*[chat(api, key, idem, "same question", session_id="race")
                                        for _ in range(8)])
            assert {r.status_code for r in rs} == {202}, [r.text for r in rs]
            assert len({r.json()["job_id"] for r in rs}) == 1
            assert sum(r.headers.get("idempotent-replayed") == "true" for r in rs) == 7
            rs = await asyncio.gather(*[
                api.client.post("/idle-job", json={"prompt": "same", "max_tokens": 16},
                                headers=headers(key, f"idle-{idem}")) for _ in range(8)])
            assert {r.status_code for r in rs} == {202}, [r.text for r in rs]
            assert len({r.json()["job_id"] for r in rs}) == 1
        assert await count(api, ChatJob) == 3
        assert await count(api, IdleJob) == 3
        assert await count(api, ChatLog) == 3  # one user turn a round


async def test_idle_jobs_take_a_key_too(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("buyer", scopes="idle")
        body = {"prompt": "Summarise this.", "max_tokens": 64}
        first = await api.client.post("/idle-job", json=body, headers=headers(key, "k1"))
        again = await api.client.post("/idle-job", json=body, headers=headers(key, "k1"))
        assert first.status_code == again.status_code == 202, again.text
        assert first.json() == again.json()
        assert again.headers["idempotent-replayed"] == "true"
        r = await api.client.post("/idle-job", json={**body, "max_tokens": 65},
                                  headers=headers(key, "k1"))
        assert r.status_code == 409 and r.json()["error"] == "idempotency_key_reused"
        assert await count(api, IdleJob) == 1


async def test_v1_completions_take_a_key(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key("openai-co")
        miner = await api.miner()
        r = await api.client.get("/job/next", params={"wait": 0, "model": MODEL},
                                 headers=miner.auth)  # declares MODEL
        assert r.status_code == 204
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

        async def ask(idem: str, **extra: Any) -> httpx.Response:
            return await api.client.post("/v1/chat/completions", json={**body, **extra},
                                         headers=headers(key, idem))
        first = asyncio.create_task(ask("v1-a"))
        r = await api.client.get("/job/next", params={"wait": 5, "model": MODEL},
                                 headers=miner.auth)
        assert r.status_code == 200, r.text
        job = r.json()
        retry = asyncio.create_task(ask("v1-a"))  # the first client's connection dropped
        await asyncio.sleep(0.2)
        assert (await miner.post_result(job, "hello!")).status_code == 200
        a, b = await first, await retry
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json()["id"] == b.json()["id"] == f"chatcmpl-{job['job_id']}"
        assert b.json()["choices"][0]["message"]["content"] == "hello!"
        assert b.headers["idempotent-replayed"] == "true"
        r = await ask("v1-a", temperature=0.5)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "idempotency_key_reused"  # in OpenAI's error shape
        assert await count(api, ChatJob) == 1


async def test_bad_keys_are_400(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(chat_allow_anonymous=True)) as api:
        key = await api.api_key("alpha", scopes="chat,idle")
        for bad in ("", "a" * 256, "has space", "semi;colon", "quote\"d", "tab\there"):
            r = await chat(api, key, bad)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"] == "invalid_idempotency_key"
            r = await api.client.post("/idle-job", json={"prompt": "p", "max_tokens": 8},
                                      headers=headers(key, bad))
            assert r.status_code == 400 and r.json()["error"] == "invalid_idempotency_key"
        assert (await chat(api, key, "a" * 255)).status_code == 202  # the longest allowed
        assert (await chat(api, key, "Az09-_.:~+/=")).status_code == 202
        # anonymous callers cannot be told apart: a key means nothing without an API key
        r = await chat(api, None, "anon-1")
        assert r.status_code == 400 and r.json()["error"] == "invalid_idempotency_key"
        assert await count(api, ChatJob) == 2


async def test_a_key_expires_after_its_window(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        first = (await chat(api, key, "old-key")).json()
        async with api.ctx.db.transaction() as s:  # the key was used a day and a minute ago
            await s.execute(update(IdempotencyKey).values(
                created_at=utcnow() - timedelta(seconds=api.settings.idempotency_key_ttl_s + 60)))
        again = await chat(api, key, "old-key")
        assert again.status_code == 202 and again.json()["job_id"] != first["job_id"]
        assert "idempotent-replayed" not in again.headers
        assert (await chat(api, key, "old-key")).json()["job_id"] == again.json()["job_id"]
        # a different request may reuse an expired key too
        async with api.ctx.db.transaction() as s:
            await s.execute(update(IdempotencyKey).values(
                created_at=utcnow() - timedelta(seconds=api.settings.idempotency_key_ttl_s + 60)))
        assert (await chat(api, key, "old-key", "something else")).status_code == 202
        # the worker prunes expired keys and keeps live ones
        await chat(api, key, "fresh-key")
        async with api.ctx.db.transaction() as s:
            await s.execute(update(IdempotencyKey).where(IdempotencyKey.key == "old-key").values(
                created_at=utcnow() - timedelta(days=2)))
        assert await prune_idempotency_keys({"app": api.ctx}) == 1
        assert await prune_idempotency_keys({"app": api.ctx}) == 0
        async with api.ctx.db.sessions() as s:
            left = (await s.execute(select(IdempotencyKey.key))).scalars().all()
        assert left == ["fresh-key"]


async def test_the_key_survives_losing_redis(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        first = (await chat(api, key, "k-redis", "hello")).json()
        delete_keys(api.settings.redis_url, f"{api.settings.redis_prefix}:*")  # Redis lost it all
        again = await chat(api, key, "k-redis", "hello")
        assert again.status_code == 202 and again.json()["job_id"] == first["job_id"]
        assert await count(api, ChatJob) == 1


async def test_the_openapi_document_names_the_header(api):  # type: ignore[no-untyped-def]
    spec = (await api.client.get("/openapi.json")).json()
    for path in ("/chat", "/v1/chat/completions", "/idle-job"):
        params = spec["paths"][path]["post"]["parameters"]
        header = next(p for p in params if p["name"] == "Idempotency-Key")
        assert header["in"] == "header" and header["schema"]["maxLength"] == 255
        assert "409" in spec["paths"][path]["post"]["responses"]


async def test_a_job_withdrawn_for_a_down_queue_frees_its_key(any_db, settings_factory,  # type: ignore[no-untyped-def]
                                                               private_redis):
    import os
    import signal
    s = settings_factory(any_db, redis_url=private_redis.url, redis_command_timeout_s=0.5)
    async with running_app(s) as api:
        key = await api.api_key()
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            r = await chat(api, key, "k-down", "anyone?")
            assert r.status_code == 503 and r.json()["error"] == "queue_unavailable"
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        assert await count(api, IdempotencyKey) == 0  # nothing was queued: nothing to replay
        r = await chat(api, key, "k-down", "anyone?")
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers
        assert await count(api, ChatJob) == 1


async def test_a_streamed_retry_follows_the_first_requests_job(settings_factory):  # type: ignore[no-untyped-def]
    from tests.openai_api.support import MODEL as SERVED
    from tests.openai_api.support import v1_app
    async with v1_app(settings_factory()) as v1:
        miner = await v1.miner()
        body = {"model": SERVED, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        h = headers(v1.key, "stream-1")
        async with httpx.AsyncClient(base_url=v1.url, timeout=30) as http:
            async with http.stream("POST", "/v1/chat/completions", headers=h, json=body) as r:
                job = await miner.poll()
                assert job is not None
                await miner.chunk(job, 0, "Hel")
                async for line in r.aiter_lines():
                    if "Hel" in line:
                        break  # then the connection drops
            sdk = v1.sdk()
            stream = await sdk.chat.completions.with_raw_response.create(
                model=SERVED, stream=True, messages=body["messages"], extra_headers=h)
            assert stream.headers["idempotent-replayed"] == "true"
            await miner.chunk(job, 1, "lo")
            await miner.finish(job, "Hello")
            text = "".join([c.choices[0].delta.content or "" async for c in stream.parse()
                            if c.choices])
            assert text == "Hello"  # the whole answer of the first request's job
        assert await count(v1.api, ChatJob) == 1
