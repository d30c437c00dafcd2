"""/v1/chat/completions and /v1/models through the official openai SDK, against the real app
(on a real socket) and simulated miners that lease, stream and sign like real ones."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.openai_api.support import MODEL, v1_app

pytestmark = pytest.mark.timeout(90)


async def test_models_lists_what_polling_miners_declare(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        sdk = v1.sdk()
        assert [m.id async for m in sdk.models.list()] == []
        await v1.miner(MODEL)
        await v1.miner("other/model:q4")
        models = [m async for m in sdk.models.list()]
        assert [m.id for m in models] == [MODEL, "other/model:q4"]
        assert all(m.object == "model" and m.created > 0 for m in models)


async def test_a_model_no_miner_serves_is_a_404_not_a_job(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        with pytest.raises(openai.NotFoundError) as caught:
            await v1.sdk().chat.completions.create(
                model="nobody-serves-this", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 404
        assert caught.value.code == "model_not_found" and caught.value.param == "model"
        assert await v1.api.ctx.queue.members("chat") == set()


async def test_non_streamed_answer_with_usage_and_session(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(any_db)) as v1:
        miner = await v1.miner()
        ask = asyncio.create_task(v1.sdk().chat.completions.create(
            model=MODEL, max_tokens=50, temperature=0.2, stop=["\n\n"],
            messages=[{"role": "system", "content": "You are Acme's support agent."},
                      {"role": "user", "content": "My order is late."},
                      {"role": "assistant", "content": "Sorry! What is the order number?"},
                      {"role": "user", "content": [{"type": "text", "text": "It is 4417."}]}]))
        job = await miner.poll()
        assert job is not None
        assert job["prompt"] == "It is 4417." and job["context"] == "You are Acme's support agent."
        assert [h["content"] for h in job["history"]] == ["My order is late.",
                                                          "Sorry! What is the order number?"]
        assert (job["model"], job["max_tokens"], job["temperature"], job["stop"],
                job["stream"]) == (MODEL, 50, 0.2, ["\n\n"], False)
        await miner.finish(job, "Order 4417 ships tomorrow.")
        done = await ask
        assert done.object == "chat.completion" and done.model == MODEL
        assert done.id == f"chatcmpl-{job['job_id']}"
        assert done.choices[0].message.content == "Order 4417 ships tomorrow."
        assert done.choices[0].message.role == "assistant"
        assert done.choices[0].finish_reason == "stop"
        assert done.usage is not None and done.usage.completion_tokens > 0
        assert done.usage.prompt_tokens > 10  # every message, counted by the server
        assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
        session = done.model_extra["session_id"]  # type: ignore[index]
        r = await v1.api.client.get(f"/chat/sessions/{session}/messages",
                                    headers={"Authorization": f"Bearer {v1.key}"})
        assert [(m["role"], m["message"]) for m in r.json()["messages"]] == [
            ("user", "My order is late."), ("assistant", "Sorry! What is the order number?"),
            ("user", "It is 4417."), ("assistant", "Order 4417 ships tomorrow.")]


async def test_streamed_deltas_arrive_before_the_miner_has_finished(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(any_db)) as v1:
        miner = await v1.miner()
        stream = await v1.sdk().chat.completions.create(
            model=MODEL, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Say hello to the world"}])
        job = await miner.poll()
        assert job is not None and job["stream"] is True
        # the stream is marked as read before the job is queued, so even a chunk posted before
        # the client's first event is read sees someone watching
        assert (await v1.api.ctx.redis.exists(v1.api.ctx.relay._keys(job["job_id"])[2])) == 1
        chunks = stream.__aiter__()
        first = await chunks.__anext__()
        assert first.choices[0].delta.role == "assistant"
        assert (await miner.chunk(job, 0, "Hello")).json()["watching"] is True
        got = await asyncio.wait_for(chunks.__anext__(), 10)
        assert got.choices[0].delta.content == "Hello"  # before the result exists
        assert (await miner.chunk(job, 1, ", wor")).status_code == 200
        got = await asyncio.wait_for(chunks.__anext__(), 10)
        assert got.choices[0].delta.content == ", wor"
        await miner.finish(job, "Hello, world!")  # the rest comes from the signed answer
        rest = [c async for c in chunks]
        assert [c.choices[0].delta.content for c in rest if c.choices and
                c.choices[0].delta.content] == ["ld!"]
        assert [c.choices[0].finish_reason for c in rest if c.choices] [-1] == "stop"
        usage = rest[-1]
        assert usage.choices == [] and usage.usage is not None
        assert usage.usage.completion_tokens > 0 and usage.usage.prompt_tokens > 0
        assert all(c.id == f"chatcmpl-{job['job_id']}" for c in rest)


async def test_raw_sse_ends_with_done(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        miner = await v1.miner()

        async def answer() -> None:
            job = await miner.poll()
            assert job is not None
            await miner.chunk(job, 0, "Hi")
            await miner.finish(job, "Hi there")
        task = asyncio.create_task(answer())
        lines = []
        async with httpx.AsyncClient(base_url=v1.url, timeout=30) as http:
            async with http.stream("POST", "/v1/chat/completions",
                                   headers={"Authorization": f"Bearer {v1.key}"},
                                   json={"model": MODEL, "stream": True,
                                         "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = [line async for line in r.aiter_lines() if line]
        await task
        assert lines[-1] == "data: [DONE]"
        assert all(line.startswith("data: ") for line in lines)


async def test_errors_come_in_openai_shape(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        await v1.miner()
        sdk = v1.sdk()
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, n=2,
                                              messages=[{"role": "user", "content": "hi"}])
        assert caught.value.param == "n"
        with pytest.raises(openai.AuthenticationError):
            await v1.sdk("mia_not_a_key").chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=[
                {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
        assert caught.value.code == "invalid_value"
        async with httpx.AsyncClient(base_url=v1.url) as http:
            r = await http.post("/v1/chat/completions", content=b"{not json",
                                headers={"Authorization": f"Bearer {v1.key}"})
            assert r.status_code == 400
            assert set(r.json()["error"]) == {"message", "type", "code", "param"}
            r = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": []},
                                headers={"Authorization": f"Bearer {v1.key}"})
            assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
            assert r.json()["error"]["type"] == "invalid_request_error"
            r = await http.post("/chat", json={"message": ""},
                                headers={"Authorization": f"Bearer {v1.key}"})
            assert r.json()["error"] == "validation_error"  # the rest of the API is unchanged
