"""Issue 18, point 6: the reference miner and the demo model as honest miners (a job's greedy or
seeded sampling reaches the model server; two honest demo miners give the same answer), and the
demo model's switches to misbehave (canned text, truncation, another model, a copier, a sleeper),
each over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from miner.demo_model import (CANNED, CHEATS, LABEL, DemoState, create_demo_app, demo_answer,
                              honest_text, main)
from miner.model import Sampling
from miner.prompt import job_sampling
from tests.miner.support import RunningMiner, UvicornThread
from tests.miner.test_miner_e2e import until


def _ask(dm, content: str, max_tokens: int = 300, **extra) -> str:  # type: ignore[no-untyped-def]
    body = {"model": "mia-demo", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, **extra}
    r = httpx.post(dm.url + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def _honest(content: str, words: int = 0) -> str:
    return honest_text([{"role": "user", "content": content}], words)


# ---- honest miners ---------------------------------------------------------------------------

def test_a_jobs_seed_is_taken_as_an_integer_only() -> None:
    assert job_sampling({"temperature": 0, "seed": 42}) == Sampling(temperature=0.0, seed=42)
    assert job_sampling({"seed": 0}).seed == 0
    assert job_sampling({"seed": True}).seed is None
    assert job_sampling({"seed": "42"}).seed is None and job_sampling({"seed": 1.5}).seed is None


@pytest.mark.parametrize("batch", ["auto", "off"])
async def test_greedy_and_seeded_jobs_reach_the_model_and_two_honest_miners_agree(
        server, batch) -> None:  # type: ignore[no-untyped-def]
    """A lease that asks for greedy decoding (temperature 0) and a seed is generated that way,
    over the miner's own --temperature; two honest miners on two demo model servers answer the
    same job with the same text (what a verification job compares)."""
    states = [DemoState(), DemoState()]
    with UvicornThread(factory=lambda: create_demo_app(states[0])) as a, \
            UvicornThread(factory=lambda: create_demo_app(states[1])) as b:
        answers = []
        for srv, state in ((a, states[0]), (b, states[1])):
            job = server.add_job("Where is my parcel? [demo:words=60]",
                                 extra={"temperature": 0, "seed": 1234})
            async with RunningMiner(server.url, srv.url, batch=batch, temperature=0.7):
                await until(lambda job=job: server.jobs[job].status == "completed")
            sent = state.last_request
            assert (sent["temperature"], sent["seed"]) == (0, 1234)
            answers.append(server.jobs[job].output)
        assert answers[0] == answers[1] == _honest("Where is my parcel? [demo:words=60]", 60)
        # a job that says nothing: the miner's temperature, and no seed
        job = server.add_job("hello")
        async with RunningMiner(server.url, a.url, batch=batch, temperature=0.7):
            await until(lambda: server.jobs[job].status == "completed")
        assert states[0].last_request["temperature"] == 0.7 and "seed" not in states[0].last_request


def test_answers_do_not_depend_on_the_sampling(demo_model) -> None:  # type: ignore[no-untyped-def]
    greedy = _ask(demo_model, "Refund please", temperature=0)
    assert _ask(demo_model, "Refund please", temperature=0.9, seed=7) == greedy
    assert demo_model.control()["last_request"]["seed"] == 7
    r = httpx.post(demo_model.url + "/chat/completions", timeout=10, json={
        "messages": [{"role": "user", "content": "x"}], "seed": "7"})
    assert r.status_code == 400 and "seed" in r.json()["error"]["message"]


def test_padding_follows_the_conversation() -> None:
    a, b = _honest("first [demo:words=80]", 80), _honest("second [demo:words=80]", 80)
    assert len(a.split()) == len(b.split()) == 80
    tail_a, tail_b = a.split()[-40:], b.split()[-40:]
    assert sum(x == y for x, y in zip(tail_a, tail_b, strict=True)) < 10  # not the same filler


# ---- the switches ----------------------------------------------------------------------------

def test_honest_by_default(demo_model) -> None:  # type: ignore[no-untyped-def]
    state = demo_model.control()
    assert state["cheat"] is None and state["cheat_after"] == 0 and state["seen"] == 0
    assert _ask(demo_model, "Is it honest?") == _honest("Is it honest?")


def test_canned_answers_the_same_text_to_everything(demo_model) -> None:  # type: ignore[no-untyped-def]
    demo_model.control(cheat="canned")
    assert _ask(demo_model, "Where is my parcel?") == _ask(demo_model, "Cancel my plan") == CANNED
    assert _ask(demo_model, "x", max_tokens=4) == " ".join(CANNED.split()[:4])  # still max_tokens


def test_truncate_keeps_the_first_share_of_the_honest_answer(demo_model) -> None:  # type: ignore[no-untyped-def]
    demo_model.control(cheat="truncate")
    honest = _honest("Where is my parcel? [demo:words=100]", 100).split()
    cut = _ask(demo_model, "Where is my parcel? [demo:words=100]").split()
    assert cut == honest[:30]  # 30 % by default
    demo_model.control(truncate_at=0.5)
    assert _ask(demo_model, "Where is my parcel? [demo:words=100]").split() == honest[:50]
    assert httpx.post(demo_model.root + "/demo/control", json={"truncate_at": 1.5}).status_code == 400


def test_other_model_is_another_deterministic_generator(demo_model) -> None:  # type: ignore[no-untyped-def]
    demo_model.control(cheat="other-model")
    first = _ask(demo_model, "Where is my parcel? [demo:words=60]")
    assert first == _ask(demo_model, "Where is my parcel? [demo:words=60]")  # deterministic
    honest = _honest("Where is my parcel? [demo:words=60]", 60)
    assert first.startswith(LABEL) and first != honest
    # it parts from the honest answer right after the label, and stays apart
    assert first.split()[3] != honest.split()[3]
    pairs = list(zip(first.split(), honest.split(), strict=False))
    assert sum(x == y for x, y in pairs) < len(pairs) // 4
    assert _ask(demo_model, "Another question") != first


def test_copy_replays_an_answer_given_to_another_conversation(demo_model) -> None:  # type: ignore[no-untyped-def]
    demo_model.control(cheat="copy")
    first = _ask(demo_model, "Where is my parcel?")
    assert first == _honest("Where is my parcel?")  # nothing to replay yet: answered honestly
    second = _ask(demo_model, "How do I reset my password?")
    assert second == first  # the parcel answer, for a password question
    assert second != _honest("How do I reset my password?")
    # the parcel conversation again: nothing but its own answer to replay, so honest again
    assert _ask(demo_model, "Where is my parcel?") == first
    assert demo_model.control()["seen"] == 1  # the one honest answer, kept once


def test_a_sleeper_answers_honestly_before_it_cheats(demo_model) -> None:  # type: ignore[no-untyped-def]
    demo_model.control(cheat="canned", cheat_after=2)
    assert _ask(demo_model, "one") == _honest("one")
    assert _ask(demo_model, "two") == _honest("two")
    assert _ask(demo_model, "three") == CANNED
    state = demo_model.control(reset=True)
    assert state["cheat"] is None and state["cheat_after"] == 0 and state["answered"] == 0
    assert _ask(demo_model, "four") == _honest("four")


def test_switches_are_checked(demo_model) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(demo_model.root + "/demo/control", json={"cheat": "lazy"})
    assert r.status_code == 400 and "canned" in r.json()["error"]["message"]
    assert demo_model.control()["cheat"] is None
    assert set(CHEATS) == {"canned", "truncate", "other-model", "copy"}


def test_the_command_line_switches(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """`python -m miner.demo_model --cheat copy --cheat-after 3` starts a copier (uvicorn.run is
    replaced by a hand that reads the app's state instead of serving it)."""
    import uvicorn

    seen: dict[str, DemoState] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.setdefault("state", app.state.demo))
    main(["--cheat", "copy", "--cheat-after", "3", "--port", "1"])
    assert (seen["state"].cheat, seen["state"].cheat_after) == ("copy", 3)
    assert "CHEATING: copy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--cheat", "truncate", "--truncate-at", "0"])


async def test_a_miner_on_a_cheating_demo_model_posts_what_it_made_up(server) -> None:  # type: ignore[no-untyped-def]
    """The switch works through the reference miner: what the backend receives is the cheat."""
    state = DemoState(cheat="truncate")
    with UvicornThread(factory=lambda: create_demo_app(state)) as srv:
        job = server.add_job("Where is my parcel? [demo:words=100]", extra={"temperature": 0})
        async with RunningMiner(server.url, srv.url):
            await until(lambda: server.jobs[job].status == "completed")
    honest, _, _ = demo_answer([{"role": "user", "content": "Where is my parcel? [demo:words=100]"}],
                               512, None, 100)
    assert server.jobs[job].output == " ".join(honest.split()[:30])
