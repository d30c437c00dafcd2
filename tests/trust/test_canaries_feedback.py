"""Canaries (mixed in as ordinary chat jobs, never billed or counted) and business feedback
(only on the business's own answers)."""

from __future__ import annotations

from pathlib import Path

from app.trust import add_canaries
from tests.support.harness import running_app, until
from tests.trust.support import (ANSWER, announce, answer_next, check_jobs, job_row, record,
                                 trust_settings)

REFERENCE = "Paris is the capital of France and its largest city by far"


async def test_a_canary_looks_ordinary_is_judged_and_is_never_billed_or_counted(
        settings_factory, any_db) -> None:
    settings = trust_settings(settings_factory, any_db, canary_rate=1.0)
    async with running_app(settings) as api:
        await add_canaries(api.ctx.db, [dict(
            prompt="What is the capital of France?", reference=REFERENCE,
            history=[{"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello! How can I help?"}])])
        key = await api.api_key("acme", scopes="chat,idle")
        honest, cheat = await api.miner(), await api.miner()
        await announce(honest, cheat)
        before = (await api.client.get("/network")).json()
        await api.chat(key, "When do you open?")
        business = await answer_next(honest, ANSWER)  # brings one canary
        canary = await honest.next_job(wait=3)
        assert canary is not None and set(canary) == set(business)
        assert canary["prompt"] == "What is the capital of France?"
        assert [h["role"] for h in canary["history"]] == ["user", "assistant"]
        assert canary["session_id"] != business["session_id"]
        assert (await honest.post_result(canary, REFERENCE)).status_code == 200
        await until(lambda: _checks(api, honest, 1))

        await api.chat(key, "another question")
        await answer_next(cheat, ANSWER)  # a second canary
        wrong = await answer_next(cheat, "I do not know, sorry.")
        assert (await job_row(api, wrong["job_id"])).purpose == "canary"
        await until(lambda: _checks(api, cheat, 1))
        assert (await record(api, honest))["checks"]["by_kind"]["canary"] == {"passed": 1,
                                                                             "failed": 0}
        assert (await record(api, cheat))["checks"]["by_kind"]["canary"] == {"passed": 0,
                                                                            "failed": 1}
        # never billed, never revenue, never traffic: /network and /metrics count the two
        # business jobs only, and the queue depth leaves check lists out
        after = (await api.client.get("/network")).json()
        assert after["completed_in_window"]["chat"] == 2
        assert after["ledger"]["revenue_usd"] == before["ledger"]["revenue_usd"]
        assert len(await check_jobs(api)) == 2
        metrics = (await api.client.get("/metrics", params={"format": "json"})).json()
        assert metrics["jobs"]["chat"] == {"completed": 2}
        assert metrics["runpod_income_usd"] == before["ledger"]["revenue_usd"]
        await api.chat(key, "a third question")
        await answer_next(honest, ANSWER)  # its canary stays queued
        assert len(await check_jobs(api)) == 3
        assert (await api.client.get("/network")).json()["queue_depth"]["chat"] == 0


async def _checks(api, miner, n: int) -> bool:  # type: ignore[no-untyped-def]
    r = await record(api, miner)
    return r["checks"]["passed"] + r["checks"]["failed"] >= n


async def test_canaries_load_from_a_file_and_bad_lines_are_refused(settings_factory,
                                                                   tmp_path: Path) -> None:
    from argparse import Namespace

    from app.cli import add_canaries as cli_add
    settings = trust_settings(settings_factory, None)
    async with running_app(settings):  # builds the schema
        good = tmp_path / "canaries.jsonl"
        good.write_text('{"prompt": "2+2?", "reference": "4", "model": "m"}\n\n'
                        '{"prompt": "Capital of Spain?", "reference": "Madrid"}\n')
        assert await cli_add(settings, Namespace(canary_command="load", file=str(good))) == 0
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "no reference"}\n')
        assert await cli_add(settings, Namespace(canary_command="load", file=str(bad))) == 2
        assert await cli_add(settings, Namespace(canary_command="add", prompt="Hi?",
                                                 reference="Hello", model=None,
                                                 context=None)) == 0


async def test_feedback_only_on_the_business_own_answered_jobs(settings_factory, any_db) -> None:
    settings = trust_settings(settings_factory, any_db)
    async with running_app(settings) as api:
        acme, other = await api.api_key("acme"), await api.api_key("other")
        miner = await api.miner()
        job_id = (await api.chat(acme, "first")).json()["job_id"]
        unanswered = None
        await answer_next(miner, ANSWER)
        second = (await api.chat(acme, "second")).json()["job_id"]

        async def rate(key: str, jid: str, rating: str, **extra: str):  # type: ignore[no-untyped-def]
            return await api.client.post(f"/chat/{jid}/feedback", json={"rating": rating, **extra},
                                         headers={"Authorization": f"Bearer {key}"})

        r = await rate(other, job_id, "down")  # another business's job: as if unknown
        assert r.status_code == 404 and r.json()["error"] == "job_not_found"
        unanswered = await rate(acme, second, "up")
        assert unanswered.status_code == 409 and unanswered.json()["error"] == "job_not_answered"
        assert (await rate(acme, job_id, "sideways")).status_code in (400, 422)
        r = await rate(acme, job_id, "down", comment="wrong hours")
        assert r.status_code == 200 and r.json() == {"job_id": job_id, "rating": "down"}
        assert (await rate(acme, job_id, "up")).json()["error"] == "feedback_exists"
        await answer_next(miner, ANSWER)
        assert (await rate(acme, f"chatcmpl-{second}", "up")).status_code == 200  # /v1's id
        rec = await record(api, miner)
        assert rec["checks"]["by_kind"]["feedback"] == {"passed": 1, "failed": 1}
        assert 0.45 < rec["score"] < 0.55  # a small weight either way
        assert not rec["suspended"]
        # a rating is no check of the work: it never counts toward leaving probation
        from tests.trust.support import miner_row
        assert (await miner_row(api, miner)).checks_passed == 0
