"""Re-scoring: an answer sampled at temperature > 0 cannot be re-run, so a sampled one is scored
in one prefill by the operator's model server (RESCORE_URL; here the demo model's
/v1/completions with echo + logprobs, on a real socket). Honest answers pass; canned text,
another conversation's answer and a cut answer fail and forfeit their credit; a server that is
down or slow never delays the business's answer; without RESCORE_URL nothing is asked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.trust import rescore
from miner.demo_model import DEMO_MODEL_NAME, DemoState, ScoreState, create_demo_app
from miner.prompt import build_messages
from tests.miner.support import UvicornThread, free_port
from tests.openai_api.support import Miner
from tests.support.harness import Harness, running_app, until
from tests.trust.support import miner_row, record, trust_settings

pytestmark = pytest.mark.timeout(90)
CONVERSATION = [{"role": "system", "content": "Shop: Acme, a bakery."},
                {"role": "user", "content": "When do you open on Saturday?"}]


class Demo:
    def __init__(self) -> None:
        self.app = create_demo_app(DemoState())
        self.server = UvicornThread(app=self.app).start()
        self.url = self.server.url + "/v1"

    @property
    def scoring(self) -> ScoreState:
        return self.app.state.scoring  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    d = Demo()
    yield d
    d.server.stop()


@pytest.fixture(autouse=True)
def _fresh(demo: Demo) -> None:
    demo.scoring.delay, demo.scoring.fail_status = 0.0, None


async def own_answer(demo: Demo, job: dict[str, Any]) -> str:
    """What the demo model answers to a job, asked the way a miner asks it."""
    async with httpx.AsyncClient() as http:
        r = await http.post(demo.url + "/chat/completions", json={
            "model": DEMO_MODEL_NAME, "messages": build_messages(job), "temperature": 0.7})
    return r.json()["choices"][0]["message"]["content"]  # type: ignore[no-any-return]


async def served(api: Harness, key: str, miner: Miner, demo: Demo, answer: Any,
                 conversation: list[dict[str, str]] = CONVERSATION) -> tuple[str, float]:
    """A business asks at temperature 0.7; the miner answers answer(its model's own answer).
    Returns what the business got and how long the miner's result post took."""
    ask = asyncio.create_task(api.client.post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
        json={"model": DEMO_MODEL_NAME, "messages": conversation, "temperature": 0.7}))
    job = await miner.poll()
    assert job is not None and job["temperature"] == 0.7
    text = answer(await own_answer(demo, job))
    started = time.monotonic()
    await miner.finish(job, text)
    took = time.monotonic() - started
    r = await ask
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"], took


async def rescored(api: Harness, miner: Miner) -> dict[str, int]:
    return (await record(api, miner.sim))["checks"]["by_kind"]["rescore"]  # type: ignore[no-any-return]


async def a_miner(api: Harness) -> Miner:
    miner = Miner(await api.miner(), DEMO_MODEL_NAME)
    assert await miner.poll(0) is None  # declares the model
    return miner


def settings_for(settings_factory: Any, db: str, url: str | None, **extra: Any) -> Any:
    return trust_settings(settings_factory, db, verify_sample_rate=1.0, rescore_url=url,
                          rescore_model=DEMO_MODEL_NAME, reputation_suspend_below=0.2, **extra)


async def test_honest_sampled_answers_pass_and_cheats_fail_and_forfeit(settings_factory, any_db,
                                                                       demo) -> None:
    async with running_app(settings_for(settings_factory, any_db, demo.url)) as api:
        key = await api.api_key("acme")
        honest, canned, other, cut = [await a_miner(api) for _ in range(4)]
        asked = demo.scoring.requests

        got, _ = await served(api, key, honest, demo, lambda own: own)
        await until(lambda: _checked(api, honest))
        assert await rescored(api, honest) == {"passed": 1, "failed": 0}
        assert (await miner_row(api, honest.sim)).job_count == 1  # credited
        assert demo.scoring.requests == asked + 1  # one prefill per sampled answer

        elsewhere = await own_answer(demo, {"prompt": "Do you sell gluten-free bread?"})
        for miner, cheat in ((canned, lambda own: "Thank you for your message, we will get "
                                                  "back to you soon."),
                             (other, lambda own: elsewhere),  # another conversation's answer
                             (cut, lambda own: " ".join(own.split()[:len(own.split()) // 3]))):
            await served(api, key, miner, demo, cheat)
            await until(lambda m=miner: _checked(api, m))
            assert await rescored(api, miner) == {"passed": 0, "failed": 1}
            row = await miner_row(api, miner.sim)
            assert row.job_count == 0 and row.tokens_generated == 0  # its credit forfeited
        r = (await record(api, cut.sim))
        assert r["score"] < 0.5 < (await record(api, honest.sim))["score"]
        assert demo.scoring.requests == asked + 4


async def _checked(api: Harness, miner: Miner) -> bool:
    found = await rescored(api, miner)
    return found["passed"] + found["failed"] >= 1


async def test_an_answer_cut_by_max_tokens_is_not_taken_for_a_cut_answer(settings_factory,
                                                                         any_db, demo) -> None:
    settings = settings_for(settings_factory, any_db, demo.url, rescore_api_key="sk-scorer")
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        miner = await a_miner(api)
        ask = asyncio.create_task(api.client.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
            json={"model": DEMO_MODEL_NAME, "messages": CONVERSATION, "temperature": 0.7,
                  "max_tokens": 8}))
        job = await miner.poll()
        assert job is not None
        async with httpx.AsyncClient() as http:  # the model server stops at max_tokens
            r = (await http.post(demo.url + "/chat/completions", json={
                "model": DEMO_MODEL_NAME, "messages": build_messages(job),
                "max_tokens": job["max_tokens"]})).json()["choices"][0]
        assert r["finish_reason"] == "length"
        await miner.finish(job, r["message"]["content"], finish_reason="length")
        assert (await ask).status_code == 200
        await until(lambda: _checked(api, miner))
        assert await rescored(api, miner) == {"passed": 1, "failed": 0}
        assert demo.scoring.authorization == "Bearer sk-scorer"


async def test_past_rescore_concurrency_answers_are_not_rescored(settings_factory, any_db, demo,
                                                               caplog) -> None:
    demo.scoring.delay = 3.0  # the first re-score is still in flight when the second answer comes
    settings = settings_for(settings_factory, any_db, demo.url, rescore_concurrency=1)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        first, second = await a_miner(api), await a_miner(api)
        asked = demo.scoring.requests
        await served(api, key, first, demo, lambda own: own)
        await served(api, key, second, demo, lambda own: "Canned, while the scorer is busy.")
        assert "is not re-scored" in caplog.text
        await until(lambda: _checked(api, first))
        await until(lambda: _settled())
        assert await rescored(api, second) == {"passed": 0, "failed": 0}
        assert demo.scoring.requests == asked + 1


@pytest.mark.parametrize("how", ["down", "slow", "failing"])
async def test_a_down_or_slow_scoring_server_never_delays_the_answer(settings_factory, any_db,
                                                                    demo, how, caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1" if how == "down" else demo.url
    if how == "slow":
        demo.scoring.delay = 5.0
    if how == "failing":
        demo.scoring.fail_status = 500
    settings = settings_for(settings_factory, any_db, url, rescore_timeout_s=2.5)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        miner = await a_miner(api)
        got, took = await served(api, key, miner, demo, lambda own: own)
        assert got.startswith("[MIA demo model]")
        assert took < 2.0  # the re-score (up to 2.5 s, its server 5 s) was not awaited
        await until(lambda: _settled(), timeout=10)
        assert await rescored(api, miner) == {"passed": 0, "failed": 0}  # skipped, not failed
        assert (await miner_row(api, miner.sim)).job_count == 1
        assert "could not re-score" in caplog.text


async def _settled() -> bool:
    return rescore.in_flight() == 0


async def test_without_rescore_url_nothing_is_asked(settings_factory, any_db, demo) -> None:
    async with running_app(settings_for(settings_factory, any_db, None)) as api:
        key = await api.api_key("acme")
        miner = await a_miner(api)
        asked = demo.scoring.requests
        await served(api, key, miner, demo, lambda own: "Canned text, never checked.")
        assert rescore.in_flight() == 0
        await asyncio.sleep(0.2)
        assert demo.scoring.requests == asked
        assert await rescored(api, miner) == {"passed": 0, "failed": 0}


def test_vllm_shaped_logprobs_are_read_by_offset() -> None:
    """An echoed prompt as vLLM returns it (tokens with leading spaces, a null first logprob,
    top_logprobs holding the top k and the token itself, one generated token at the end)."""
    prefix, answer = "Q: boil? A:", " water is hot"
    prompt = prefix + answer + "<|im_end|>"
    lp = {"tokens": ["Q", ":", " boil", "?", " A", ":", " water", " is", " hot", "<|im_end|>",
                     "\n"],
          "token_logprobs": [None, -2.0, -5.0, -1.0, -1.0, -0.5, -0.2, -3.0, -8.0, -0.1, -0.3],
          "top_logprobs": [None] + [{"x": -0.1}] * 6 + [
              {" is": -3.0, " are": -0.5}, {" hot": -8.0, " a": -0.1, " b": -0.2, " c": -0.3},
              {"<|im_end|>": -0.1}, {"\n": -0.3}],
          "text_offset": [0, 1, 2, 7, 8, 10, 11, 17, 20, 24, 34]}
    found = rescore.measure(lp, len(prefix), len(prefix) + len(answer), len(prompt), top_k=2)
    assert found.tokens == 3 and found.mean_logprob == pytest.approx(-11.2 / 3)
    assert found.outside_top_k == pytest.approx(1 / 3)  # " hot": three likelier tokens
    assert found.end_logprob == -0.1
