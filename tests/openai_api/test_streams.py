"""What a stream says when things go wrong: the miner dies mid-answer, the client hangs up,
the signed answer differs from the streamed text, nobody answers in time; and the chunk
endpoint's own rules (numbering, the lease)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.openai_api.support import MODEL, v1_app
from tests.support.harness import until

pytestmark = pytest.mark.timeout(90)
HI = [{"role": "user", "content": "hi"}]


async def test_a_miner_dying_mid_stream_is_an_error_event_and_the_job_is_redelivered(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(lease_seconds=1)) as v1:
        dying, honest = await v1.miner(), await v1.miner()
        stream = await v1.sdk().chat.completions.create(model=MODEL, stream=True, messages=HI)
        job = await dying.poll()
        assert job is not None
        await dying.chunk(job, 0, "Half an ans")
        seen = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:  # the dying miner goes silent; its lease runs out
                seen.extend(c.delta.content for c in chunk.choices if c.delta.content)
        assert seen == ["Half an ans"]  # never a silent truncation: the stream says why
        assert "another miner" in str(caught.value.message)
        again = await honest.poll(10)
        assert again is not None and again["job_id"] == job["job_id"] and again["attempt"] == 2
        await honest.finish(again, "A whole answer.")
        r = await v1.api.client.get(f"/chat/{job['job_id']}",
                                    headers={"Authorization": f"Bearer {v1.key}"})
        assert r.json()["response"] == "A whole answer."


async def test_a_client_hanging_up_does_not_disturb_the_miner(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        miner = await v1.miner()
        async with httpx.AsyncClient(base_url=v1.url, timeout=30) as http:
            async with http.stream("POST", "/v1/chat/completions",
                                   headers={"Authorization": f"Bearer {v1.key}"},
                                   json={"model": MODEL, "stream": True, "messages": HI}) as r:
                job = await miner.poll()
                assert job is not None
                assert (await miner.chunk(job, 0, "Hel")).json()["watching"] is True
                async for line in r.aiter_lines():
                    if "Hel" in line:
                        break
        # hung up: the miner's chunks are still taken, then say nobody watches
        async def unwatched() -> bool:
            r = await miner.chunk(job, 1, "lo")
            return r.status_code == 200 and r.json()["watching"] is False
        await until(unwatched, 10)
        await miner.finish(job, "Hello")
        r = await v1.api.client.get(f"/chat/{job['job_id']}",
                                    headers={"Authorization": f"Bearer {v1.key}"})
        assert r.json()["status"] == "completed" and r.json()["response"] == "Hello"


async def test_a_signed_answer_that_differs_from_the_stream_is_an_error(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        miner = await v1.miner()
        stream = await v1.sdk().chat.completions.create(model=MODEL, stream=True, messages=HI)
        job = await miner.poll()
        assert job is not None
        await miner.chunk(job, 0, "Yes, we")
        await miner.finish(job, "No, we do not.")
        with pytest.raises(openai.APIError) as caught:
            async for _ in stream:
                pass
        assert "differs" in str(caught.value.message)


async def test_no_answer_in_time(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(openai_max_wait_s=1)) as v1:
        await v1.miner()
        sdk = v1.sdk()
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=HI)
        assert caught.value.status_code == 504 and caught.value.code == "timeout"
        stream = await sdk.chat.completions.create(model=MODEL, stream=True, messages=HI)
        with pytest.raises(openai.APIError) as streamed:
            async for _ in stream:
                pass
        assert "OPENAI_MAX_WAIT_S" in str(streamed.value.message)


async def test_chunk_numbering_and_the_lease(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        miner, other = await v1.miner(), await v1.miner()
        stream = await v1.sdk().chat.completions.create(model=MODEL, stream=True, messages=HI)
        job = await miner.poll()
        assert job is not None and job["stream"] is True
        first = await miner.chunk(job, 0, "a")
        assert first.json()["next_seq"] == 1
        repeat = await miner.chunk(job, 0, "a")  # a retry: ignored
        assert repeat.status_code == 200 and repeat.json()["next_seq"] == 1
        gap = await miner.chunk(job, 3, "d")
        assert gap.status_code == 409 and gap.json()["error"] == "chunk_gap"
        assert gap.json()["next_seq"] == 1
        stolen = await other.chunk(job, 1, "b")  # not its lease
        assert stolen.status_code == 409 and stolen.json()["error"] == "lease_not_current"
        entries = await v1.api.ctx.relay.read(job["job_id"], 0)
        assert [e.text for e in entries] == ["a"]
        await miner.finish(job, "ab")
        text = ""
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
        assert text == "ab"
        late = await miner.chunk(job, 1, "b")
        assert late.status_code == 409 and late.json()["error"] == "lease_not_current"
        bad = await miner.chunk({"job_id": "x" * 80, "lease_id": "l"}, 0, "z")
        assert bad.status_code == 404
