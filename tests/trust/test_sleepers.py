"""Sleepers: a wallet that passes probation honestly, then cheats. A failed work check sends a
graduated wallet back to probation at once (no later answer of it reaches a business), a failure
weighs REPUTATION_FAIL_WEIGHT passes (a few failures suspend a wallet with many passes), and a
business's rating alone never demotes."""

from __future__ import annotations

import httpx
from eth_account import Account
from sqlalchemy import update

from app.models import Miner
from app.trust import add_canaries
from tests.support.harness import SimMiner, running_app, until
from tests.trust.support import (ANSWER, announce, answer_next, job_row, miner_row, record,
                                 trust_settings)

CANNED = "Thank you for your message, we will get back to you soon."
REFERENCE = "Paris is the capital of France and its largest city by far"


def _set(api, **values: float) -> None:  # type: ignore[no-untyped-def]
    """Change a sampling rate of the running app (the checks read c.settings per answer)."""
    api.ctx.settings = api.ctx.settings.model_copy(update=values)


async def _view(api, key: str, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    r = await api.client.get(f"/chat/{job_id}", headers={"Authorization": f"Bearer {key}"})
    return r.json()  # type: ignore[no-any-return]


async def _checks(api, miner, n: int) -> bool:  # type: ignore[no-untyped-def]
    r = await record(api, miner)
    return r["checks"]["passed"] + r["checks"]["failed"] >= n


async def _graduate(api, key: str, trusted: SimMiner,  # type: ignore[no-untyped-def]
                    w: SimMiner) -> None:
    """PROBATION_JOBS=1: w passes one shadow check of a job the trusted wallet answers."""
    job_id = (await api.chat(key, "first question")).json()["job_id"]
    assert (await answer_next(trusted, ANSWER))["job_id"] == job_id
    await answer_next(w, ANSWER)
    await until(lambda: _checks(api, w, 1))
    assert (await record(api, w))["probation"] is False


async def test_a_graduated_wallet_failing_one_verification_is_back_on_probation(
        settings_factory, any_db) -> None:
    trusted = Account.create()
    # a failure weighing 2 passes: back on probation, not suspended (the point here)
    settings = trust_settings(settings_factory, any_db, probation_jobs=1,
                              trusted_miners=[trusted.address], reputation_fail_weight=2.0)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        t = SimMiner(api.client, trusted)
        await t.register()
        w, judge = await api.miner(), await api.miner()
        await announce(t, w, judge)
        await _graduate(api, key, t, w)

        # graduated, w takes two business jobs; every answer is now sampled for verification
        _set(api, verify_sample_rate=1.0)
        first = (await api.chat(key, "When do you open?")).json()["job_id"]
        second = (await api.chat(key, "Where are you?")).json()["job_id"]
        cheat = await w.next_job(wait=3)
        held = await w.next_job(wait=3)
        assert cheat is not None and held is not None
        assert {cheat["job_id"], held["job_id"]} == {first, second}
        assert (await w.post_result(cheat, CANNED)).status_code == 200  # the business sees it
        # t verifies it and disagrees; the judge (on probation: check work only) breaks the tie
        assert (await job_row(api, (await answer_next(t, ANSWER))["job_id"])).origin_job_id \
            == cheat["job_id"]
        await answer_next(judge, ANSWER)
        await until(lambda: _checks(api, w, 2))
        rec = await record(api, w)
        # (its pass on probation, then the failure)
        assert rec["checks"]["by_kind"]["verify"] == {"passed": 1, "failed": 1}
        assert rec["probation"] is True and rec["suspended"] is False, rec
        assert rec["graduated_at"] is None

        # the business job it held is taken back: its answer is refused, t answers instead
        _set(api, verify_sample_rate=0.0)
        refused = await w.post_result(held, CANNED)
        assert refused.status_code == 409, refused.text
        assert (await answer_next(t, ANSWER))["job_id"] == held["job_id"]
        assert (await _view(api, key, held["job_id"]))["response"] == ANSWER
        # and no later business job reaches it: check work only (the shadow of the new one)
        later = (await api.chat(key, "Do you deliver?")).json()["job_id"]
        await _only_check_work(api, w)
        assert (await answer_next(t, ANSWER))["job_id"] == later
        await _only_check_work(api, w)
        assert (await _view(api, key, later))["response"] == ANSWER


async def _only_check_work(api, w: SimMiner) -> None:  # type: ignore[no-untyped-def]
    while (job := await w.next_job(wait=0.3)) is not None:
        assert (await job_row(api, job["job_id"])).purpose is not None, job
        await w.post_result(job, CANNED)


async def test_a_graduated_wallet_failing_one_canary_is_back_on_probation(
        settings_factory, any_db) -> None:
    trusted = Account.create()
    settings = trust_settings(settings_factory, any_db, probation_jobs=1,
                              trusted_miners=[trusted.address], reputation_fail_weight=2.0)
    async with running_app(settings) as api:
        await add_canaries(api.ctx.db, [dict(prompt="What is the capital of France?",
                                             reference=REFERENCE)])
        key = await api.api_key("acme")
        t = SimMiner(api.client, trusted)
        await t.register()
        w = await api.miner()
        await announce(t, w)
        await _graduate(api, key, t, w)
        _set(api, canary_rate=1.0)
        await api.chat(key, "When do you open?")
        await answer_next(w, ANSWER)  # a business job, which brings a canary
        canary = await answer_next(w, "I do not know, sorry.")
        assert (await job_row(api, canary["job_id"])).purpose == "canary"
        await until(lambda: _checks(api, w, 2))
        rec = await record(api, w)
        assert rec["checks"]["by_kind"]["canary"] == {"passed": 0, "failed": 1}
        assert rec["probation"] is True and rec["suspended"] is False, rec
        _set(api, canary_rate=0.0)
        later = (await api.chat(key, "Do you deliver?")).json()["job_id"]
        await _only_check_work(api, w)  # no business job for it any more
        assert (await answer_next(t, ANSWER))["job_id"] == later


async def test_a_few_failures_suspend_a_wallet_despite_many_earlier_passes(
        settings_factory, any_db) -> None:
    """A wallet with the decayed weight of 40 earlier passes (what a sleeper banks on
    probation): with the default fail weight each failure weighs 20 passes, and its fourth
    failed check suspends it (with a failure weighing one pass it took 43)."""
    trusted = Account.create()
    settings = trust_settings(settings_factory, any_db, probation_jobs=1,
                              trusted_miners=[trusted.address])
    assert settings.reputation_fail_weight == 20
    async with running_app(settings) as api:
        await add_canaries(api.ctx.db, [dict(prompt=f"Capital question {i}?",
                                             reference=REFERENCE) for i in range(8)])
        key = await api.api_key("acme")
        t = SimMiner(api.client, trusted)
        await t.register()
        w = await api.miner()
        await announce(t, w)
        await _graduate(api, key, t, w)
        async with api.ctx.db.transaction() as s:  # 40 passes, decayed: sum of 0.98^i
            await s.execute(update(Miner.__table__).where(Miner.address == w.address)
                            .values(rep_passed=27.0))
        _set(api, canary_rate=1.0)
        rounds = 0
        while not (await record(api, w))["suspended"]:
            assert rounds < 6, await record(api, w)
            failed = (await record(api, w))["checks"]["failed"]
            await api.chat(key, f"question {rounds}")
            # graduated, w answers the business job; back on probation, t does
            await answer_next(t if rounds else w, ANSWER)
            try:
                while (job := await w.next_job(wait=0.5)) is not None:  # its canary, a shadow
                    await w.post_result(job, "I do not know, sorry.")
            except httpx.HTTPStatusError as exc:  # suspended while it worked
                assert exc.response.status_code == 403
            rounds += 1
            await until(lambda n=failed + 1: _failed(api, w, n))  # type: ignore[misc]
        rec = await record(api, w)
        assert rec["checks"]["by_kind"]["canary"] == {"passed": 0, "failed": 4}, rec
        assert rec["score"] < 0.3
        assert "after a failed canary check" in (await miner_row(api, w)).suspended_reason


async def _failed(api, miner, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await record(api, miner))["checks"]["failed"] >= n


async def test_feedback_alone_never_demotes(settings_factory, any_db) -> None:
    trusted = Account.create()
    settings = trust_settings(settings_factory, any_db, probation_jobs=1,
                              trusted_miners=[trusted.address])
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        t = SimMiner(api.client, trusted)
        await t.register()
        w = await api.miner()
        await announce(t, w)
        await _graduate(api, key, t, w)
        for i in range(5):
            job_id = (await api.chat(key, f"question {i}")).json()["job_id"]
            assert (await answer_next(w, ANSWER))["job_id"] == job_id
            r = await api.client.post(f"/chat/{job_id}/feedback", json={"rating": "down"},
                                      headers={"Authorization": f"Bearer {key}"})
            assert r.status_code < 300, r.text
        rec = await record(api, w)
        assert rec["checks"]["by_kind"]["feedback"] == {"passed": 0, "failed": 5}
        assert rec["probation"] is False and rec["suspended"] is False, rec
        job_id = (await api.chat(key, "still serving?")).json()["job_id"]
        assert (await answer_next(w, ANSWER))["job_id"] == job_id
