"""A job for a named model reaches only miners that declared it; conversations continue in
their chat session; queue lists per model survive Redis losing them."""

from __future__ import annotations

import asyncio

import openai
import pytest

from app.ops import maintenance
from tests.openai_api.support import MODEL, v1_app

pytestmark = pytest.mark.timeout(90)
HI = [{"role": "user", "content": "hi"}]


async def test_only_miners_declaring_the_model_lease_its_jobs(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(any_db)) as v1:
        other, plain, right = (await v1.miner("other-model"), await v1.miner(None),
                               await v1.miner(MODEL))
        ask = asyncio.create_task(v1.sdk().chat.completions.create(model=MODEL, messages=HI))
        await asyncio.sleep(0.3)
        assert await other.poll(0.5) is None
        assert await plain.poll(0.5) is None
        legacy = await v1.api.chat(v1.key, "an untargeted POST /chat job")
        assert legacy.status_code == 202
        metrics = (await v1.api.client.get("/metrics")).json()
        assert metrics["queue_depth"]["chat"] == 2  # the model's list is counted too
        job = await right.poll()
        assert job is not None and job["model"] == MODEL  # its own model's list comes first
        untargeted = await other.poll()
        assert untargeted is not None and untargeted["model"] is None  # anyone takes those
        await right.finish(job, "hello")
        assert (await ask).choices[0].message.content == "hello"


async def test_a_lost_model_list_is_rebuilt_by_the_reconciler(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(run_maintenance_in_api=False)) as v1:
        miner = await v1.miner()
        ask = asyncio.create_task(v1.sdk().chat.completions.create(model=MODEL, messages=HI))
        queue = v1.api.ctx.queue

        async def queued() -> set[str]:
            return await queue.members("chat")
        while not await queued():
            await asyncio.sleep(0.05)
        await queue.redis.delete(queue.key("chat", MODEL))  # Redis lost it
        await asyncio.sleep(v1.api.settings.reconcile_grace_s)
        assert await maintenance.reconcile_queue(v1.api.ctx) == 1
        job = await miner.poll()
        assert job is not None
        await miner.finish(job, "back")
        assert (await ask).choices[0].message.content == "back"


async def test_a_conversation_continues_its_session(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        miner = await v1.miner()
        sdk = v1.sdk()

        async def answered(messages: list[dict[str, str]], reply: str, **extra: object) -> object:
            ask = asyncio.create_task(sdk.chat.completions.create(
                model=MODEL, messages=messages, **extra))  # type: ignore[call-overload]
            job = await miner.poll()
            assert job is not None
            await miner.finish(job, reply)
            return await ask
        first = await answered([{"role": "user", "content": "Q1"}], "A1")
        session = first.model_extra["session_id"]  # type: ignore[attr-defined]
        talk = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"}]
        await answered(talk, "A2", extra_body={"session_id": session})
        r = await v1.api.client.get(f"/chat/sessions/{session}/messages",
                                    headers={"Authorization": f"Bearer {v1.key}"})
        assert [m["message"] for m in r.json()["messages"]] == ["Q1", "A1", "Q2", "A2"]
        with pytest.raises(openai.ConflictError) as caught:  # rewriting what the session holds
            await sdk.chat.completions.create(
                model=MODEL, extra_body={"session_id": session},
                messages=[{"role": "user", "content": "Q1 (edited)"},
                          {"role": "assistant", "content": "A1"},
                          {"role": "user", "content": "Q3"}])
        assert caught.value.code == "session_history_mismatch"
        # session ids are scoped per business: another business naming this id gets a session
        # of its own, and neither it nor its miner sees a turn of the first one's
        stranger = await v1.api.api_key("someone-else")
        ask = asyncio.create_task(v1.sdk(stranger).chat.completions.create(
            model=MODEL, messages=HI, extra_body={"session_id": session}))
        job = await miner.poll()
        assert job is not None and job["session_id"] == session and job["history"] == []
        await miner.finish(job, "hello stranger")
        assert (await ask).model_extra["session_id"] == session  # type: ignore[union-attr]
        for key, turns in ((v1.key, ["Q1", "A1", "Q2", "A2"]), (stranger, ["hi", "hello stranger"])):
            r = await v1.api.client.get(f"/chat/sessions/{session}/messages",
                                        headers={"Authorization": f"Bearer {key}"})
            assert [m["message"] for m in r.json()["messages"]] == turns
