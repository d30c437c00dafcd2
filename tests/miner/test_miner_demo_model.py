"""The demo model server over real HTTP: OpenAI shapes, determinism, usage, test switches."""

from __future__ import annotations

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
    assert _chat(demo_model, "x", stream=True).status_code == 400
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
