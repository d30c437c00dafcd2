"""Probation: a new wallet answers shadow work only until it has passed PROBATION_JOBS checks;
on a network with no trusted wallet, a business gets an answer two wallets agreed on; a wallet
whose reputation falls too low is suspended and its leases go back to the queue at once."""

from __future__ import annotations

from eth_account import Account

from app.trust import routing
from tests.idle.support import operator_token
from tests.support.harness import running_app, until
from tests.trust.support import (ANSWER, announce, answer_next, check_jobs, job_row, record,
                                 trust_settings)

CANNED = "Thank you for your message, we will get back to you soon."


async def _business_view(api, key: str, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    r = await api.client.get(f"/chat/{job_id}", headers={"Authorization": f"Bearer {key}"})
    return r.json()  # type: ignore[no-any-return]


async def test_probation_never_shows_a_probationary_answer_to_a_business(settings_factory,
                                                                        any_db) -> None:
    trusted = Account.create()
    # a failure weighing one pass, so that the wallet stays on probation instead of suspended
    settings = trust_settings(settings_factory, any_db, probation_jobs=2,
                              trusted_miners=[trusted.address], reputation_fail_weight=1.0)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        from tests.support.harness import SimMiner
        t = SimMiner(api.client, trusted)
        await t.register()
        new = await api.miner()
        await announce(t, new)
        assert (await record(api, new))["probation"] is True
        assert (await record(api, t))["probation"] is False

        for i in range(2):
            job_id = (await api.chat(key, f"question {i}")).json()["job_id"]
            assert await new.next_job(wait=0.3) is None  # never a business's job
            assert (await answer_next(t, ANSWER))["job_id"] == job_id
            # its shadow: the same job for the new wallet, whose answer no business sees
            shadow = await answer_next(new, CANNED if i == 0 else ANSWER)
            assert shadow["job_id"] != job_id
            assert (await job_row(api, shadow["job_id"])).origin_job_id == job_id
            seen = await _business_view(api, key, job_id)
            assert seen["response"] == ANSWER
            assert (await _business_view(api, key, shadow["job_id"]))["error"] == "job_not_found"
        await until(lambda: _judged(api, new, 2))
        # the canned shadow went to a third wallet? none here: it waits; one pass so far
        rec = await record(api, new)
        assert rec["probation"] is True and rec["checks"]["passed"] == 1, rec

        # a second new wallet breaks the tie of the first shadow: the canned answer fails
        third = await api.miner()
        tie = await third.next_job(wait=3)
        assert tie is not None
        assert (await third.post_result(tie, ANSWER)).status_code == 200
        await until(lambda: _failed(api, new))
        # two passes in all, but only one since its failure: still on probation
        for i, passes in ((2, 2), (3, 3)):
            job_id = (await api.chat(key, f"question {i}")).json()["job_id"]
            assert await new.next_job(wait=0.3) is None
            assert (await answer_next(t, ANSWER))["job_id"] == job_id
            await answer_next(new, ANSWER)
            await until(lambda n=passes: _passes(api, new, n))  # type: ignore[misc]
            assert (await record(api, new))["probation"] is (i == 2)
        job_id = (await api.chat(key, "question 4")).json()["job_id"]
        assert (await answer_next(new, ANSWER))["job_id"] == job_id  # now serves businesses


async def _judged(api, miner, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len([j for j in await check_jobs(api) if j.status == "completed"]) >= n


async def _failed(api, miner) -> bool:  # type: ignore[no-untyped-def]
    return (await record(api, miner))["checks"]["failed"] >= 1


async def _passes(api, miner, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await record(api, miner))["checks"]["passed"] >= n


async def test_with_no_trusted_wallet_a_business_sees_only_an_answer_two_wallets_agreed_on(
        settings_factory, any_db) -> None:
    settings = trust_settings(settings_factory, any_db, probation_jobs=5)
    routing._bootstrap.clear()
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        p1, p2 = await api.miner(), await api.miner()
        job_id = (await api.chat(key, "When do you open?")).json()["job_id"]
        first = await answer_next(p1, ANSWER)
        assert first["job_id"] != job_id  # a copy, never the business's job itself
        assert (await job_row(api, first["job_id"])).origin_job_id == job_id
        seen = await _business_view(api, key, job_id)
        assert seen["status"] == "queued" and seen["response"] is None
        assert await p1.next_job(wait=0.2) is None  # the second copy is for another wallet
        second = await answer_next(p2, ANSWER)
        assert second["job_id"] not in (job_id, first["job_id"])
        await until(lambda: _answered(api, key, job_id))
        seen = await _business_view(api, key, job_id)
        assert seen["response"] == ANSWER
        r1, r2 = await record(api, p1), await record(api, p2)
        assert r1["checks"]["passed"] == r2["checks"]["passed"] == 1
        assert r1["probation"] and r2["probation"]


async def _answered(api, key, job_id) -> bool:  # type: ignore[no-untyped-def]
    return (await _business_view(api, key, job_id))["status"] == "completed"


async def test_a_wallet_suspended_by_reputation_gives_its_leases_back_at_once(
        settings_factory, any_db) -> None:
    operator = Account.create()
    settings = trust_settings(settings_factory, any_db, canary_rate=1.0,
                              reputation_suspend_below=0.4, operator_addresses=[operator.address],
                              auth_cache_ttl_s=300)
    async with running_app(settings) as api:
        from app.trust import add_canaries
        await add_canaries(api.ctx.db, [dict(prompt="Capital of France?",
                                             reference="Paris is the capital of France.")])
        key = await api.api_key("acme")
        cheat = await api.miner()
        await announce(cheat)
        await api.chat(key, "first")
        await answer_next(cheat, CANNED)  # brings a canary
        held_id = (await api.chat(key, "second")).json()["job_id"]
        held = await cheat.next_job(wait=3)  # business lists come first
        assert held is not None and held["job_id"] == held_id
        canary = await cheat.next_job(wait=3)
        assert canary is not None and (await job_row(api, canary["job_id"])).purpose == "canary"
        assert (await cheat.post_result(canary, CANNED)).status_code == 200
        await until(lambda: _suspended(api, cheat))
        # its lease went back to the queue at once (not after it expired)
        job = await job_row(api, held_id)
        assert job.status == "queued" and job.miner_id is None
        members = await api.ctx.queue.members("chat")
        assert held_id in members
        r = await cheat.client.get("/job/next", headers=cheat.auth)
        assert r.status_code == 403 and r.json()["error"] == "miner_suspended"
        rec = await record(api, cheat)
        assert rec["suspended"] and "REPUTATION_SUSPEND_BELOW" in rec["suspended_reason"]
        assert (await check_jobs(api))[0].status == "completed"

        # the operator sees the reason and may lift it
        op = {"Authorization": f"Bearer {await operator_token(api.client, operator)}"}
        r = await api.client.post(f"/miners/{cheat.address}/unsuspend", headers=op)
        assert r.status_code == 200
        rec = await record(api, cheat)
        assert not rec["suspended"] and rec["suspended_reason"] is None


async def _suspended(api, miner) -> bool:  # type: ignore[no-untyped-def]
    return bool((await record(api, miner))["suspended"])
