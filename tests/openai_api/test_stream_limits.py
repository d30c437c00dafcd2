"""What a wallet can put into Redis and into an API process through chunks (issue 23, H1):
chunks only on streamed jobs, a per-lease chunk count and byte budget, an expiry that chunks do not
push further, and a stream that keeps no copy of the text it sent."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

import pytest

from tests.openai_api.support import MODEL, v1_app

pytestmark = pytest.mark.timeout(120)
HI = [{"role": "user", "content": "hi"}]


async def _buffer_bytes(v1, job_id: str) -> int:  # type: ignore[no-untyped-def]
    """Redis memory held by a job's stream keys."""
    redis = v1.api.ctx.redis
    total = 0
    for key in v1.api.ctx.relay._keys(job_id):
        total += await redis.memory_usage(key) or 0
    return total


async def test_a_job_that_is_not_streamed_takes_no_chunks(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        miner = await v1.miner()
        ask = asyncio.create_task(v1.sdk().chat.completions.create(model=MODEL, messages=HI))
        job = await miner.poll()
        assert job is not None and job["stream"] is False
        refused = await miner.chunk(job, 0, "x" * 16_000)
        assert refused.status_code == 409 and refused.json()["error"] == "not_streamed"
        assert await v1.api.ctx.relay.read(job["job_id"], 0) == []
        assert await _buffer_bytes(v1, job["job_id"]) == 0
        await miner.finish(job, "fine")
        assert (await ask).choices[0].message.content == "fine"


async def test_a_lease_streams_within_its_budget_and_the_client_still_gets_everything(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(stream_max_chunks=5, stream_bytes_per_token=16)) as v1:
        miner = await v1.miner()
        # max_tokens=4: 64 bytes (4 tokens of at most 16 bytes), at most 5 chunks (the cap)
        small = await v1.sdk().chat.completions.create(model=MODEL, stream=True, messages=HI,
                                                       max_tokens=4)
        job = await miner.poll()
        assert job is not None and job["stream"] is True
        assert (await miner.chunk(job, 0, "x" * 40)).status_code == 200
        over = await miner.chunk(job, 1, "y" * 30)
        assert over.status_code == 409 and over.json()["error"] == "stream_budget"
        assert over.json()["next_seq"] == 1
        assert (await miner.chunk(job, 1, "y" * 24)).status_code == 200  # exactly 64
        assert (await miner.chunk(job, 2, "z")).json()["error"] == "stream_budget"
        await miner.finish(job, "x" * 40 + "y" * 24 + " and the rest")
        text = ""
        async for chunk in small:
            text += "".join(c.delta.content or "" for c in chunk.choices)
        assert text == "x" * 40 + "y" * 24 + " and the rest"

        # no max_tokens: STREAM_MAX_CHUNKS chunks, then refused
        big = await v1.sdk().chat.completions.create(model=MODEL, stream=True, messages=HI)
        job = await miner.poll()
        assert job is not None
        for seq in range(5):
            assert (await miner.chunk(job, seq, "a")).status_code == 200
        sixth = await miner.chunk(job, 5, "a")
        assert sixth.status_code == 409 and sixth.json()["error"] == "stream_budget"
        await miner.finish(job, "aaaaa!")
        text = ""
        async for chunk in big:
            text += "".join(c.delta.content or "" for c in chunk.choices)
        assert text == "aaaaa!"


async def test_one_wallet_flooding_eight_streamed_leases_is_held_to_their_budgets(settings_factory):  # type: ignore[no-untyped-def]
    """The audit's attack (8 leases, 16,000-character chunks as fast as accepted) on jobs that
    are streamed: Redis holds each lease's budget and no more."""
    budget = 131_072  # the default STREAM_MAX_BYTES
    async with v1_app(settings_factory(lease_seconds=300)) as v1:
        miner = await v1.miner()
        streams = [asyncio.create_task(v1.sdk().chat.completions.create(
            model=MODEL, stream=True, messages=HI)) for _ in range(8)]
        jobs = []
        while len(jobs) < 8:
            job = await miner.poll()
            assert job is not None
            jobs.append(job)
        for job in jobs:
            seq = 0
            while (r := await miner.chunk(job, seq, "x" * 16_000)).status_code == 200:
                seq += 1
            assert r.json()["error"] == "stream_budget" and seq == budget // 16_000
        held = sum([await _buffer_bytes(v1, job["job_id"]) for job in jobs])
        assert held < 8 * (budget + 16_384)  # the budget and Redis's own overhead
        for task in streams:
            await (await task).close()


async def test_chunks_do_not_push_the_buffers_expiry(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(lease_max_total_s=900, stream_buffer_ttl_s=600)) as v1:
        miner = await v1.miner()
        stream = await v1.sdk().chat.completions.create(model=MODEL, stream=True, messages=HI)
        job = await miner.poll()
        assert job is not None
        buf = v1.api.ctx.relay._keys(job["job_id"])[0]
        assert (await miner.chunk(job, 0, "a")).status_code == 200
        first = await v1.api.ctx.redis.expiretime(buf)
        # the lease's hard end (assignment + LEASE_MAX_TOTAL_S) + STREAM_BUFFER_TTL_S
        assert abs(first - (time.time() + 1500)) <= 3
        await asyncio.sleep(1.1)
        assert (await miner.chunk(job, 1, "b")).status_code == 200
        assert await v1.api.ctx.redis.expiretime(buf) == first  # not renewed by the chunk
        await miner.finish(job, "ab")
        async for _ in stream:
            pass


async def test_a_stream_keeps_no_copy_of_what_it_sent(settings_factory):  # type: ignore[no-untyped-def]
    """A stream reading 1.6 MB of chunks holds a running hash and a length, not the text: the
    API process's memory does not grow with what it relayed. (The budget is raised past any
    real answer's size here, to make the growth plain.)"""
    size, n = 16_000, 100
    settings = settings_factory(stream_max_bytes=size * n, stream_max_chunks=n, lease_seconds=600)
    async with v1_app(settings) as v1:
        miner = await v1.miner()
        stream = await v1.sdk().chat.completions.create(model=MODEL, stream=True, messages=HI)
        job = await miner.poll()
        assert job is not None
        pieces = [chr(ord("a") + i % 26) * size for i in range(n)]
        received = 0
        events = stream.__aiter__()
        gc.collect()
        tracemalloc.start()
        try:
            for seq, piece in enumerate(pieces):
                r = await miner.chunk(job, seq, piece)
                assert r.status_code == 200, r.text
                while received < (seq + 1) * size:  # read as it comes, keep nothing
                    chunk = await events.__anext__()
                    received += sum(len(c.delta.content or "") for c in chunk.choices)
            gc.collect()
            # what the relay's reads allocated and something still holds
            kept = sum(stat.size for stat in tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(True, "*/app/relay.py"),
                 tracemalloc.Filter(True, "*/app/openai_api/relay.py")]).statistics("filename"))
        finally:
            tracemalloc.stop()
        await stream.close()
        assert received == size * n
        assert kept < 200_000, f"the API process kept {kept} bytes for a {size * n} stream"
