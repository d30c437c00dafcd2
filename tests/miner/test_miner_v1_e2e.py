"""mia-miner behind the real coordinator's OpenAI-compatible API (app.main.create_app on
127.0.0.1, the official openai SDK as the client, the demo model as the model server): the miner
declares its model, a streamed answer reaches the client in many deltas while the miner is still
generating, and the signed result is what was streamed; a client's max_tokens and stop reach the
model server."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from miner.demo_model import LABEL
from miner.wallet import recover_result_signer
from tests.miner.support import RunningMiner
from tests.miner.test_miner_e2e import until

pytestmark = pytest.mark.timeout(120)


def sdk(backend, key: str) -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=f"{backend.url}/v1", api_key=key, max_retries=0,
                              timeout=60)


async def served(client: openai.AsyncOpenAI) -> list[str]:
    return [m.id async for m in client.models.list()]


async def until_served(client: openai.AsyncOpenAI, model: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while model not in await served(client):
        assert time.monotonic() < deadline, f"{model} never listed by GET /v1/models"
        await asyncio.sleep(0.05)


async def test_a_streamed_answer_reaches_the_client_while_the_miner_generates(
        backend, demo_model) -> None:
    client = sdk(backend, await backend.api_key())
    assert await served(client) == []
    async with RunningMiner(backend.url, demo_model.url, max_tokens=1000) as m:
        # the miner's polls declare the model its model server serves
        await until_served(client, "mia-demo")
        assert await served(client) == ["mia-demo"]

        # 150 words, one every 20 ms: about 3 s of generation
        stream = await client.chat.completions.create(
            model="mia-demo", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Tell me [demo:words=150] [demo:word_delay=0.02]"}])
        t0 = time.monotonic()
        deltas: list[tuple[float, str]] = []
        status_at_first = None
        job_id = finish = usage = None
        async for chunk in stream:
            job_id = job_id or chunk.model_extra.get("job_id")
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    if status_at_first is None:
                        # the first words are on the client's screen: the miner is still at it
                        status_at_first = backend.job(job_id)["status"]
                    deltas.append((time.monotonic() - t0, choice.delta.content))
                finish = choice.finish_reason or finish
        await until(lambda: m.miner.stats.completed == 1)
    assert status_at_first == "assigned"
    text = "".join(d for _, d in deltas)
    job = backend.job(job_id)
    assert job["status"] == "completed" and job["response"] == text
    assert text.startswith(LABEL) and len(text.split()) == 150
    assert recover_result_signer(job_id, text, job["signature"], job["finish_reason"]) == m.address
    # many deltas, spread over the generation, not one answer at the end
    assert len(deltas) >= 10
    assert deltas[len(deltas) // 2][0] < deltas[-1][0] - 0.5
    assert finish == "stop" and usage is not None and usage.completion_tokens == 150
    assert m.miner.stats.streamed == 1 and m.miner.stats.chunk_posts >= 10
    assert demo_model.control()["last_request"]["stream"] is True
    print(f"150 words at 20 ms a word: {m.miner.stats.chunk_posts} chunk posts, "
          f"{len(deltas)} deltas at the client, first after {deltas[0][0]:.3f} s, "
          f"last after {deltas[-1][0]:.3f} s")


async def test_a_clients_max_tokens_and_stop_reach_the_model_server(backend, demo_model) -> None:
    client = sdk(backend, await backend.api_key())
    async with RunningMiner(backend.url, demo_model.url) as m:
        await until_served(client, "mia-demo")
        done = await client.chat.completions.create(
            model="mia-demo", max_tokens=6, temperature=0.2, top_p=0.8,
            messages=[{"role": "user", "content": "hi"}])
        assert len(done.choices[0].message.content.split()) == 6
        sent = demo_model.control()["last_request"]
        assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stream"]) == (
            6, 0.2, 0.8, False)
        done = await client.chat.completions.create(
            model="mia-demo", stop=["not a real AI"], messages=[{"role": "user", "content": "hi"}])
        assert done.choices[0].message.content.endswith("demo answer,")
        assert demo_model.control()["last_request"]["stop"] == ["not a real AI"]
    assert m.miner.stats.completed == 2 and m.miner.stats.streamed == 0


async def test_the_miners_own_cap_is_reported_as_length(backend, demo_model) -> None:
    """The client asked for no limit; the miner's MAX_TOKENS (80) cut the answer: its model
    server said "length", the miner signed that with the output, and the client hears it."""
    client = sdk(backend, await backend.api_key())
    async with RunningMiner(backend.url, demo_model.url, max_tokens=80) as m:
        await until_served(client, "mia-demo")
        done = await client.chat.completions.create(
            model="mia-demo", messages=[{"role": "user", "content": "Tell me [demo:words=120]"}])
        assert done.choices[0].finish_reason == "length"
        stream = await client.chat.completions.create(
            model="mia-demo", stream=True,
            messages=[{"role": "user", "content": "Tell me [demo:words=120]"}])
        finishes = [c.finish_reason async for chunk in stream for c in chunk.choices
                    if c.finish_reason]
        assert finishes == ["length"]
        whole = await client.chat.completions.create(
            model="mia-demo", messages=[{"role": "user", "content": "Tell me [demo:words=1]"}])
        assert whole.choices[0].finish_reason == "stop"
        job = backend.job(whole.model_extra["job_id"])
        assert job["finish_reason"] == "stop"
        assert recover_result_signer(whole.model_extra["job_id"], job["response"],
                                     job["signature"], "stop") == m.address
    assert m.miner.stats.completed == 3
