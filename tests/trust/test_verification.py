"""Verification jobs: a sampled answered job is re-run by another wallet, as an ordinary lease;
agreement passes both, a disagreement goes to a third wallet and the odd one out fails."""

from __future__ import annotations

from app.trust.checkjobs import VERIFY
from tests.support.harness import running_app, until
from tests.trust.support import (ANSWER, announce, answer_next, check_jobs, job_row, miner_row,
                                 record, trust_settings)


async def test_a_verification_lease_looks_exactly_like_a_normal_one(settings_factory,
                                                                   any_db) -> None:
    settings = trust_settings(settings_factory, any_db, verify_sample_rate=1.0)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        a, b = await api.miner(), await api.miner()
        await announce(a, b)
        first = (await api.chat(key, "When do you open?", context="Shop: Acme")).json()
        original = await answer_next(a, "We open at 9.")
        r = await api.chat(key, "And on Saturday?", session_id=first["session_id"])
        job_id = r.json()["job_id"]
        original = await a.next_job(wait=3)
        assert original is not None and original["job_id"] == job_id
        assert (await a.post_result(original, ANSWER)).status_code == 200

        # the check's lease comes from the same endpoint with the same keys and the same job
        # (prompt, context, history, sampling); only the ids differ (a fresh session id)
        assert await a.next_job(wait=0) is None  # never to the wallet it checks
        checks = [j for j in await check_jobs(api) if j.origin_job_id == job_id]
        assert len(checks) == 1 and checks[0].purpose == VERIFY
        check = await b.next_job(wait=3)
        assert check is not None
        # (b also answered the verification of the first turn, queued first: skip it)
        while check["job_id"] != checks[0].id:
            await b.post_result(check, "We open at 9.")
            check = await b.next_job(wait=3)
        assert set(check) == set(original)
        for field in set(original) - {"job_id", "lease_id", "lease_expires_at", "session_id"}:
            assert check[field] == original[field], field
        assert check["session_id"] != original["session_id"]
        assert [h["content"] for h in check["history"]] == ["When do you open?", "We open at 9."]

        assert (await b.post_result(check, ANSWER)).status_code == 200
        await until(lambda: _passed(api, a, 2))
        assert (await record(api, b))["checks"]["by_kind"]["verify"] == {"passed": 2,
                                                                        "failed": 0}
        # credited like other work
        assert (await miner_row(api, b)).job_count == 2

        # never shown to the business: not its job, not in its session, not counted as traffic
        auth = {"Authorization": f"Bearer {key}"}
        assert (await api.client.get(f"/chat/{check['job_id']}", headers=auth)).status_code == 404
        r = await api.client.get(f"/chat/sessions/{first['session_id']}/messages", headers=auth)
        assert len(r.json()["messages"]) == 4
        network = (await api.client.get("/network")).json()
        assert network["completed_in_window"]["chat"] == 2
        assert network["trust"]["checks_last_hour"] == 4


async def _passed(api, miner, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await record(api, miner))["checks"]["passed"] >= n


async def test_a_disagreement_goes_to_a_third_wallet_and_the_odd_one_fails(settings_factory,
                                                                          any_db) -> None:
    settings = trust_settings(settings_factory, any_db, verify_sample_rate=1.0,
                              reputation_suspend_below=0.2)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        a, b, c = await api.miner(), await api.miner(), await api.miner()
        await announce(a, b, c)
        job_id = (await api.chat(key, "When do you open?")).json()["job_id"]
        assert (await answer_next(a, ANSWER))["job_id"] == job_id
        cheat = await answer_next(b, "Thank you for your message, we will reply soon.")
        assert (await job_row(api, cheat["job_id"])).origin_job_id == job_id
        # b's verification disagrees: a tie-break, never to b; c answers it like a did
        assert await b.next_job(wait=0) is None
        tie = await answer_next(c, ANSWER)
        assert (await job_row(api, tie["job_id"])).origin_job_id == job_id
        await until(lambda: _failed(api, b))
        rb, ra, rc = await record(api, b), await record(api, a), await record(api, c)
        assert rb["checks"]["by_kind"]["verify"] == {"passed": 0, "failed": 1}
        assert ra["checks"]["passed"] == 1 and rc["checks"]["passed"] == 1
        assert ra["checks"]["failed"] == rc["checks"]["failed"] == 0
        assert rb["score"] < 0.5 < ra["score"]
        # the failed check forfeits the credit of the job it judged
        assert rb["jobs_done"] == 0 and (await miner_row(api, b)).tokens_generated == 0
        assert ra["jobs_done"] == 1


async def _failed(api, miner) -> bool:  # type: ignore[no-untyped-def]
    return (await record(api, miner))["checks"]["failed"] >= 1


async def test_a_check_answer_is_judged_from_its_row_not_from_redis(settings_factory,
                                                                    any_db) -> None:
    """The statement that completes an answer says whether its job is a check job: nothing in
    Redis says which jobs are checks."""
    settings = trust_settings(settings_factory, any_db, verify_sample_rate=1.0)
    async with running_app(settings) as api:
        key = await api.api_key("acme")
        a, b = await api.miner(), await api.miner()
        await announce(a, b)
        job_id = (await api.chat(key, "When do you open?")).json()["job_id"]
        await answer_next(a, ANSWER)
        await until(lambda: _copies(api, job_id))
        await answer_next(b, ANSWER)
        await until(lambda: _passed(api, a, 1))
        assert (await record(api, b))["checks"]["by_kind"]["verify"] == {"passed": 1,
                                                                        "failed": 0}


async def _copies(api, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    return any(j.origin_job_id == job_id for j in await check_jobs(api))
