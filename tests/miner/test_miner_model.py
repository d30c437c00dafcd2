"""ModelClient against the demo model server over real HTTP: streamed answers (Server-Sent
Events) give the same Completion as whole ones, deltas arrive while the answer grows, a job's
sampling reaches the server, and every failure is a ModelError."""

from __future__ import annotations

import time

import pytest

from miner.demo_model import LABEL
from miner.model import ModelClient, ModelError, Sampling


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
async def model(demo_model):  # type: ignore[no-untyped-def]
    client = ModelClient(demo_model.url, "mia-demo", timeout=30)
    yield client
    await client.aclose()


async def test_streamed_completion_equals_the_whole_one(model, demo_model) -> None:
    deltas: list[str] = []
    streamed = await model.chat_stream(_user("Where is my parcel?"), 100, deltas.append)
    sent = demo_model.control()["last_request"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    whole = await model.chat(_user("Where is my parcel?"), 100)
    assert streamed == whole  # text, prompt and completion tokens (usage chunk), finish_reason
    assert streamed.text.startswith(LABEL) and streamed.finish_reason == "stop"
    assert streamed.completion_tokens == len(streamed.text.split()) == len(deltas)
    assert "".join(deltas) == streamed.text


async def test_deltas_arrive_while_the_answer_grows(model) -> None:
    t0 = time.monotonic()
    arrived: list[float] = []
    c = await model.chat_stream(_user("slow [demo:word_delay=0.03]"), 100,
                                lambda d: arrived.append(time.monotonic() - t0))
    total = time.monotonic() - t0
    assert len(arrived) == c.completion_tokens and total >= 0.03 * len(arrived)
    assert arrived[0] < total / 3  # the first word long before the answer is done
    assert arrived[len(arrived) // 2] < arrived[-1] - 0.2


async def test_max_tokens_and_sampling_reach_the_model_server(model, demo_model) -> None:
    c = await model.chat_stream(_user("hi"), 6, lambda d: None)
    assert (c.completion_tokens, c.finish_reason) == (6, "length")
    c = await model.chat_stream(_user("hi"), 100, lambda d: None,
                                Sampling(temperature=0.1, top_p=0.5, stop=("not a real AI",)))
    assert c.text.endswith("demo answer,") and c.finish_reason == "stop"
    sent = demo_model.control()["last_request"]
    assert (sent["temperature"], sent["top_p"], sent["stop"]) == (0.1, 0.5, ["not a real AI"])
    await model.chat(_user("hi"), 100)  # no job sampling: the miner's (greedy), no top_p/stop
    sent = demo_model.control()["last_request"]
    assert sent["temperature"] == 0 and "top_p" not in sent and "stop" not in sent


async def test_a_server_that_does_not_stream_gives_one_delta(model, demo_model) -> None:
    demo_model.control(streams=False)
    deltas: list[str] = []
    c = await model.chat_stream(_user("hi"), 100, deltas.append)
    assert deltas == [c.text] and c.completion_tokens == len(c.text.split())


async def test_failures_are_model_errors(model, demo_model, unused_url) -> None:
    with pytest.raises(ModelError, match="HTTP 503"):
        await model.chat_stream(_user("x [demo:fail=503]"), 100, lambda d: None)
    got: list[str] = []
    with pytest.raises(ModelError, match="ended before the answer was finished"):
        await model.chat_stream(_user("x [demo:cut=4]"), 100, got.append)
    assert len(got) == 4  # what came was passed on; the caller decides what to do with it
    with pytest.raises(ModelError, match="HTTP 404"):
        other = ModelClient(demo_model.url, "not-served")
        try:
            await other.chat_stream(_user("x"), 100, lambda d: None)
        finally:
            await other.aclose()
    down = ModelClient(unused_url, "mia-demo")
    with pytest.raises(ModelError, match="cannot reach"):
        await down.chat_stream(_user("x"), 100, lambda d: None)
    await down.aclose()
    slow = ModelClient(demo_model.url, "mia-demo", timeout=1)
    t = time.monotonic()
    with pytest.raises(ModelError, match="timed out"):  # the whole generation, not each read
        await slow.chat_stream(_user("x [demo:word_delay=0.1]"), 100, lambda d: None)
    assert time.monotonic() - t < 2.5
    await slow.aclose()
