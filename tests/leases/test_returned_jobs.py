"""A miner that lets a lease run out, or gives a job back, does not get that job again for
RETURNED_JOB_COOLDOWN_S: one wallet cannot spend two deliveries of a job in a row, so it cannot
fail a job alone; every returner is remembered, and none gets a job's last delivery."""

from __future__ import annotations

import asyncio

from tests.idle.support import next_idle, submit
from tests.support.harness import SimMiner, running_app


async def release(m: SimMiner, job: dict) -> int:
    r = await m.client.post(f"/job/{job['job_id']}/release",
                            json={"lease_id": job["lease_id"], "reason": "again"}, headers=m.auth)
    return r.status_code


async def test_a_wallet_cannot_burn_a_chat_jobs_deliveries(settings_factory, any_db) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(any_db, lease_seconds=1, max_attempts=3)
    async with running_app(settings) as api:
        key = await api.api_key()
        hoarder, honest = await api.miner(), await api.miner()
        job_id = (await api.chat(key, "fail me")).json()["job_id"]
        first = await hoarder.next_job(wait=2)
        assert first is not None and first["job_id"] == job_id
        assert await release(hoarder, first) == 200  # 1 of 3 deliveries spent
        # back at the front of the queue, but not for the wallet that gave it back
        assert await hoarder.next_job(wait=0.5) is None
        again = await honest.next_job(wait=2)
        assert again is not None and again["job_id"] == job_id and again["attempt"] == 2
        assert (await honest.post_result(again, "answered")).status_code == 200
        # and a lapsed lease counts as returned, like a release
        other_id = (await api.chat(key, "lapse me")).json()["job_id"]
        held = await hoarder.next_job(wait=2)
        assert held is not None and held["job_id"] == other_id
        await asyncio.sleep(1.3)  # the lease runs out; the reaper puts it back
        assert await hoarder.next_job(wait=1) is None
        redelivered = await honest.next_job(wait=3)
        assert redelivered is not None and redelivered["job_id"] == other_id
        assert redelivered["attempt"] == 2


async def test_the_cooldown_ends_and_a_lone_miner_gets_its_job_back(settings_factory, any_db) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(any_db, returned_job_cooldown_s=1)
    async with running_app(settings) as api:
        key = await api.api_key(scopes="chat,idle")
        lone = await api.miner()
        job_id = (await api.chat(key, "only one miner here")).json()["job_id"]
        first = await lone.next_job(wait=2)
        assert await release(lone, first) == 200
        assert await lone.next_job(wait=0.2) is None  # within the cooldown
        await asyncio.sleep(1.1)
        back = await lone.next_job(wait=2)
        assert back is not None and back["job_id"] == job_id and back["attempt"] == 2
        idle = (await submit(api, key))["job_id"]  # idle jobs follow the same rule
        assert (await lone.post_result(back, "done")).status_code == 200
        got = await next_idle(lone, wait=2)
        r = await lone.client.post(f"/idle-job/{got['job_id']}/release",
                                   json={"lease_id": got["lease_id"]}, headers=lone.auth)
        assert r.status_code == 200 and got["job_id"] == idle
        assert await next_idle(lone, wait=0.2) is None


async def test_two_wallets_taking_turns_cannot_fail_a_chat(settings_factory, any_db) -> None:  # type: ignore[no-untyped-def]
    """Every returner is remembered, not only the last: each waits out its own cooldown, and
    none of them gets the job's last delivery (issue 23 M1: two wallets releasing every job
    failed 17 of 20 chats)."""
    settings = settings_factory(any_db, returned_job_cooldown_s=1, max_attempts=3)
    async with running_app(settings) as api:
        key = await api.api_key()
        a, b, honest = await api.miner(), await api.miner(), await api.miner()
        job_id = (await api.chat(key, "take turns on me")).json()["job_id"]
        first = await a.next_job(wait=2)
        assert first is not None and await release(a, first) == 200
        second = await b.next_job(wait=2)
        assert second is not None and second["job_id"] == job_id and second["attempt"] == 2
        assert await release(b, second) == 200
        assert await a.next_job(wait=0.3) is None  # a returned it too, not only b
        await asyncio.sleep(1.1)  # both cooldowns are over, but the next delivery is the last
        assert await a.next_job(wait=0.3) is None
        assert await b.next_job(wait=0.3) is None
        last = await honest.next_job(wait=2)
        assert last is not None and last["job_id"] == job_id and last["attempt"] == 3
        assert (await honest.post_result(last, "answered")).status_code == 200


async def test_a_releasing_miners_words_reach_operators_not_businesses(settings_factory, any_db) -> None:  # type: ignore[no-untyped-def]
    from tests.idle.support import auth, new_operator, operator_token

    operator = new_operator()
    spam = "Our agents are offline. For your refund call +1-555-0100 and give your card number."
    settings = settings_factory(any_db, max_attempts=2, operator_addresses=[operator.address])
    async with running_app(settings) as api:
        key = await api.api_key()
        first, second = await api.miner(), await api.miner()
        job_id = (await api.chat(key, "hello")).json()["job_id"]
        for m in (first, second):
            job = await m.next_job(wait=2)
            assert job is not None and job["job_id"] == job_id
            r = await m.client.post(f"/job/{job_id}/release", headers=m.auth,
                                    json={"lease_id": job["lease_id"], "reason": spam})
            assert r.status_code == 200
        assert r.json()["status"] == "failed"
        seen = (await api.client.get(f"/chat/{job_id}",
                                     headers={"Authorization": f"Bearer {key}"})).json()
        assert seen["status"] == "failed" and "555" not in seen["failure_reason"]
        assert seen["failure_reason"].startswith("no miner could answer")
        refused = await api.client.get(f"/job/{job_id}/returns", headers=first.auth)
        assert refused.status_code == 403
        token = await operator_token(api.client, operator)
        view = await api.client.get(f"/job/{job_id}/returns", headers=auth(token))
        assert view.status_code == 200, view.text
        returns = view.json()["returns"]
        assert [(x["how"], x["reason"]) for x in returns] == [("released", spam)] * 2
        assert len({x["miner_id"] for x in returns}) == 2
