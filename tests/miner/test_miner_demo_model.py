"""The demo model server over real HTTP: OpenAI shapes, determinism, usage, streaming, stop,
test switches."""

from __future__ import annotations

import json
import time

import httpx

from miner.demo_model import LABEL


def _chat(dm, content: str, **extra) -> httpx.Response:
    body = {"model": "mia-demo", "messages": [{"role": "user", "content": content}], "max_tokens": 100}
    body.update(extra)
    return httpx.post(dm.url + "/chat/completions", json=body, timeout=30)


def test_models_and_health(demo_model) -> None:
    r = httpx.get(demo_model.url + "/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["mia-demo"]
    assert httpx.get(demo_model.root + "/health").json()["demo"] is True


def test_answer_is_labelled_deterministic_and_counted(demo_model) -> None:
    r1, r2 = _chat(demo_model, "Where is my parcel?"), _chat(demo_model, "Where is my parcel?")
    assert r1.status_code == 200
    a1, a2 = r1.json(), r2.json()
    text = a1["choices"][0]["message"]["content"]
    assert text.startswith(LABEL) and "not a real AI" in text and "Where is my parcel?" in text
    assert text == a2["choices"][0]["message"]["content"]
    usage = a1["usage"]
    assert usage["completion_tokens"] == len(text.split())
    assert usage["prompt_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert a1["choices"][0]["finish_reason"] == "stop"
    assert _chat(demo_model, "something else").json()["choices"][0]["message"]["content"] != text


def test_max_tokens_truncates(demo_model) -> None:
    a = _chat(demo_model, "hi", max_tokens=5).json()
    assert a["usage"]["completion_tokens"] == 5
    assert len(a["choices"][0]["message"]["content"].split()) == 5
    assert a["choices"][0]["finish_reason"] == "length"


def test_bad_requests(demo_model) -> None:
    assert _chat(demo_model, "x", model="mixtral").status_code == 404
    assert _chat(demo_model, "x", stop=[1]).status_code == 400
    assert _chat(demo_model, "x", temperature="hot").status_code == 400
    r = httpx.post(demo_model.url + "/chat/completions", json={"messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_switches_slow_and_failing(demo_model) -> None:
    demo_model.control(delay=0.5)
    t = time.monotonic()
    assert _chat(demo_model, "slow").status_code == 200
    assert time.monotonic() - t >= 0.5
    demo_model.control(delay=0, fail_status=503)
    assert _chat(demo_model, "x").status_code == 503
    demo_model.control(fail_status=None, fail_next=2)
    assert [_chat(demo_model, "x").status_code for _ in range(3)] == [500, 500, 200]
    # Per-request directives in the prompt.
    assert _chat(demo_model, "boom [demo:fail=502]").status_code == 502
    t = time.monotonic()
    r = _chat(demo_model, "nap [demo:sleep=0.3]")
    assert r.status_code == 200 and time.monotonic() - t >= 0.3
    assert "[demo:" not in r.json()["choices"][0]["message"]["content"]
    state = demo_model.control(reset=True)
    assert state["delay"] == 0 and state["fail_status"] is None and state["requests"] == 0


def _stream(dm, content: str, **extra) -> tuple[list[dict], list[float], str]:
    """The chunks of a streamed answer, when each arrived (seconds from the request), and the
    last event's data (which must be [DONE])."""
    body = {"model": "mia-demo", "messages": [{"role": "user", "content": content}],
            "max_tokens": 100, "stream": True}
    body.update(extra)
    chunks, times, last = [], [], ""
    t0 = time.monotonic()
    with httpx.stream("POST", dm.url + "/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            last = line.removeprefix("data: ")
            if last != "[DONE]":
                chunks.append(json.loads(last))
                times.append(time.monotonic() - t0)
    return chunks, times, last


def test_stream_word_by_word_then_usage_then_done(demo_model) -> None:
    whole = _chat(demo_model, "Where is my parcel?").json()
    chunks, _, last = _stream(demo_model, "Where is my parcel?",
                              stream_options={"include_usage": True})
    assert last == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    first, *words, finish, usage = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in words)
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *words])
    # one chunk per word, and together exactly the answer a non-streamed request gets
    text = "".join(c["choices"][0]["delta"]["content"] for c in words)
    assert text == whole["choices"][0]["message"]["content"]
    assert len(words) == len(text.split()) == whole["usage"]["completion_tokens"]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    # usage only when asked for
    chunks, _, last = _stream(demo_model, "Where is my parcel?")
    assert last == "[DONE]" and "usage" not in chunks[-1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_word_delay_spreads_the_words(demo_model) -> None:
    chunks, times, _ = _stream(demo_model, "slowly [demo:word_delay=0.05]")
    words = len(chunks) - 2
    assert words > 30
    # the first word comes long before the last, which comes after every word's delay
    assert times[1] < 0.5 and times[-1] >= 0.05 * words
    assert times[-1] - times[1] >= 0.04 * (words - 1)
    demo_model.control(word_delay=0.02)
    t = time.monotonic()
    assert _chat(demo_model, "not streamed").status_code == 200  # the same generation time
    assert time.monotonic() - t >= 0.02 * 30


def test_stream_max_tokens_stop_and_padding(demo_model) -> None:
    chunks, _, _ = _stream(demo_model, "hi", max_tokens=5)
    assert len(chunks) == 1 + 5 + 1 and chunks[-1]["choices"][0]["finish_reason"] == "length"
    a = _chat(demo_model, "hi", stop=["not a real AI", "nothing"]).json()
    assert a["choices"][0]["message"]["content"].endswith("demo answer,")
    assert a["choices"][0]["finish_reason"] == "stop"
    a = _chat(demo_model, "long [demo:words=200]", max_tokens=500).json()
    assert a["usage"]["completion_tokens"] == 200 == len(a["choices"][0]["message"]["content"].split())
    assert "[demo:" not in a["choices"][0]["message"]["content"]
    # what the request asked for is recorded for tests
    _chat(demo_model, "x", temperature=0.2, top_p=0.9, stop="END", max_tokens=7)
    assert demo_model.control()["last_request"] == {
        "model": "mia-demo", "max_tokens": 7, "temperature": 0.2, "top_p": 0.9, "stop": "END"}


def test_stream_cut_breaks_off_without_done(demo_model) -> None:
    chunks, _, last = _stream(demo_model, "x [demo:cut=3]")
    assert len(chunks) == 1 + 3 and last != "[DONE]"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_no_stream_switch_answers_a_whole_completion(demo_model) -> None:
    demo_model.control(streams=False)
    r = _chat(demo_model, "x", stream=True)
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
