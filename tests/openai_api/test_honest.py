"""Answers that tell the truth (issue 22 points 2-3, issue 23 L1, L2, L4): finish reasons from the
miner's model server, usage never above max_tokens, conversations refused rather than cut,
errors the SDKs do not retry in vain, models capped per wallet and pruned."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import func, select

from app.leases import served
from app.models import ChatJob, Miner
from tests.openai_api.support import MODEL, v1_app

pytestmark = pytest.mark.timeout(90)
HI = [{"role": "user", "content": "hi"}]


async def jobs_in(v1: Any) -> int:
    async with v1.api.ctx.db.reads() as session:
        return int((await session.execute(select(func.count()).select_from(ChatJob))).scalar())


def auth(v1: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {v1.key}"}


async def test_finish_reason_and_usage_tell_the_truth(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(any_db)) as v1:
        miner = await v1.miner()
        sdk = v1.sdk()

        # L1: 2,000 words for max_tokens=5 (a miner whose tokenizer disagrees, or who ignores
        # the cap): 5 tokens reported, credited and billed, and the answer says "length"
        ask = asyncio.create_task(sdk.chat.completions.create(model=MODEL, max_tokens=5,
                                                              messages=HI))
        job = await miner.poll()
        r = await miner.result(job, " ".join(["word"] * 2000))  # an old miner: no reason
        assert r.status_code == 200 and r.json()["output_tokens"] == 5
        done = await ask
        assert done.usage.completion_tokens == 5 and done.choices[0].finish_reason == "length"
        async with v1.api.ctx.db.reads() as session:
            credited = (await session.execute(select(Miner.tokens_generated))).scalar()
        assert credited == 5

        # the miner's own cap (its model server said "length"), the client asked for no limit
        ask = asyncio.create_task(sdk.chat.completions.create(model=MODEL, messages=HI))
        job = await miner.poll()
        await miner.finish(job, "An answer cut by the miner's cap", finish_reason="length")
        done = await ask
        assert done.choices[0].finish_reason == "length"

        # the reason is signed with the output: a forged one is refused, the true one taken
        ask = asyncio.create_task(sdk.chat.completions.create(model=MODEL, messages=HI))
        job = await miner.poll()
        forged = await miner.result(job, "Whole.", finish_reason="stop", signed_reason="length")
        assert forged.status_code == 401
        assert forged.json()["error"] == "invalid_result_signature"
        await miner.finish(job, "Whole.", finish_reason="stop")
        done = await ask
        assert done.choices[0].finish_reason == "stop"
        assert done.usage.completion_tokens > 0

        # streamed: the last chunk says "length", usage is capped, no system_fingerprint null
        async with httpx.AsyncClient(base_url=v1.url, timeout=30) as http:
            async def read() -> list[dict[str, Any]]:
                async with http.stream("POST", "/v1/chat/completions", headers=auth(v1), json={
                        "model": MODEL, "messages": HI, "max_tokens": 3, "stream": True,
                        "stream_options": {"include_usage": True}}) as resp:
                    return [orjson.loads(line[6:]) async for line in resp.aiter_lines()
                            if line.startswith("data: {")]
            reading = asyncio.create_task(read())
            job = await miner.poll()
            assert job is not None and job["stream"] is True
            await miner.finish(job, "one two three four five six", finish_reason="stop")
            chunks = await reading
        assert all("system_fingerprint" not in c for c in chunks)
        finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"]
                    if ch["finish_reason"]]
        assert finishes == ["length"]
        assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_refusals_are_400s_the_sdks_do_not_retry(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(chat_history_limit=4)) as v1:
        miner = await v1.miner()
        sdk = v1.sdk()
        turns = [{"role": r, "content": f"turn {i}"}
                 for i, r in enumerate(["user", "assistant"] * 3)]

        # more history than the model would be handed: refused, not cut silently
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=[*turns, *HI])
        assert caught.value.code == "context_length_exceeded"
        assert caught.value.param == "messages" and "CHAT_HISTORY_LIMIT" in caught.value.message
        assert caught.value.response.headers["x-should-retry"] == "false"

        # L4: 8 messages of 30,000 characters each (each under the per-message cap)
        big = [{"role": "system", "content": "x" * 30_000} for _ in range(7)]
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=[
                *big, {"role": "user", "content": "y" * 30_000}])
        assert caught.value.code == "context_length_exceeded"
        assert "OPENAI_MAX_INPUT_CHARS" in caught.value.message
        assert await jobs_in(v1) == 0

        async with httpx.AsyncClient(base_url=v1.url) as http:
            # validation: 400 (not 422), OpenAI's param spelling, "characters"
            r = await http.post("/v1/chat/completions", headers=auth(v1), json={
                "model": MODEL, "messages": [{"role": "user", "content": "z" * 32_001}]})
            assert r.status_code == 400 and r.headers["x-should-retry"] == "false"
            err = r.json()["error"]
            assert err["param"] == "messages[0].content" and err["code"] == "validation_error"
            assert "characters" in err["message"] and "items" not in err["message"]
            assert err["message"].startswith("messages[0].content")
            r = await http.post("/v1/chat/completions", headers=auth(v1), json={
                "model": MODEL, "messages": [HI[0], {"role": "user", "content": 5}]})
            assert r.status_code == 400 and r.json()["error"]["param"] == "messages[1].content"

            # a session whose history does not match: 409, and not worth a retry
            ask = asyncio.create_task(sdk.chat.completions.create(model=MODEL, messages=HI))
            job = await miner.poll()
            assert job is not None
            await miner.finish(job, "hello")
            session = (await ask).model_extra["session_id"]
            r = await http.post("/v1/chat/completions", headers=auth(v1), json={
                "model": MODEL, "session_id": session, "messages": [
                    {"role": "user", "content": "not what was said"},
                    {"role": "assistant", "content": "hello"}, *HI]})
            assert r.status_code == 409 and r.headers["x-should-retry"] == "false"
            assert r.json()["error"]["code"] == "session_history_mismatch"

            # the answer carries no system_fingerprint: null
            ask = asyncio.create_task(http.post("/v1/chat/completions", headers=auth(v1),
                                                json={"model": MODEL, "messages": HI}))
            job = await miner.poll()
            await miner.finish(job, "hi there")
            r = await ask
            assert r.status_code == 200 and "system_fingerprint" not in r.json()

            # models one by one, slashes and colons included
            await v1.miner("org/other-model:q4")
            r = await http.get("/v1/models/org/other-model:q4", headers=auth(v1))
            assert r.status_code == 200 and r.json()["id"] == "org/other-model:q4"
            assert r.json()["object"] == "model"
            r = await http.get("/v1/models/gpt-4o", headers=auth(v1))
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert (await sdk.models.retrieve(MODEL)).id == MODEL


async def test_a_failed_job_is_a_502_not_retried(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(max_attempts=1)) as v1:
        miner = await v1.miner()
        retrying = openai.AsyncOpenAI(base_url=f"{v1.url}/v1", api_key=v1.key, max_retries=2,
                                      timeout=30)
        ask = asyncio.create_task(retrying.chat.completions.create(model=MODEL, messages=HI))
        job = await miner.poll()
        r = await miner.sim.client.post(f"/job/{job['job_id']}/release", headers=miner.sim.auth,
                                        json={"lease_id": job["lease_id"]})
        assert r.status_code == 200 and r.json()["status"] == "failed"
        with pytest.raises(openai.APIStatusError) as caught:
            await ask
        assert caught.value.status_code == 502 and caught.value.code == "job_failed"
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert await jobs_in(v1) == 1  # the SDK did not retry: one job, not three
        assert await miner.poll(0) is None


async def test_declared_models_are_capped_per_wallet_and_pruned(settings_factory, monkeypatch):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(miner_max_models=2)) as v1:
        one = await v1.miner("a-model")
        one.model = "b-model"
        await one.poll(0)
        one.model = "gpt-4o"
        r = await one.sim.client.get("/job/next", params={"model": "gpt-4o"},
                                     headers=one.sim.auth)
        assert r.status_code == 400 and r.json()["error"] == "too_many_models"
        assert [m.id async for m in v1.sdk().models.list()] == ["a-model", "b-model"]
        await v1.miner("c-model")  # another wallet has its own allowance
        # the wallet's models older than MODEL_TTL_S no longer count against it
        redis, prefix = v1.api.ctx.redis, v1.api.settings.redis_prefix
        keys = [k async for k in redis.scan_iter(f"{prefix}:models:wallet:*")]
        assert len(keys) == 2
        old = time.time() - 10_000
        for key in keys:
            await redis.zadd(key, {"a-model": old, "b-model": old})
        r = await one.sim.client.get("/job/next", params={"model": "gpt-4o"},
                                     headers=one.sim.auth)
        assert r.status_code == 204, r.text

        # names nobody declared within MODEL_TTL_S leave both shared sets
        seen, since = f"{prefix}:models:seen", f"{prefix}:models:since"
        await redis.zadd(seen, {"stale": old})
        await redis.zadd(since, {"stale": old})
        await served.prune(redis, prefix, v1.api.settings.model_ttl_s)
        assert await redis.zscore(seen, "stale") is None
        assert await redis.zscore(since, "stale") is None
        assert await redis.zscore(since, "gpt-4o") is not None

        # this process's memory of what it wrote stays bounded
        monkeypatch.setattr(served, "_MEMORY", 3)
        monkeypatch.setattr(served, "DECLARE_EVERY_S", 0.0)
        for wallet_id in range(10):
            await served.declare(redis, prefix, "d-model", wallet=10_000 + wallet_id, cap=2)
        assert len(served._declared) <= 3
