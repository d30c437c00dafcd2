"""POST /job/results?next=N&wait=W (and the idle twin): the results are stored first, exactly as
without `next`, then the same request leases up to N jobs as GET /job/batch?max=N&wait=W would.
One request where a miner spent two; a refused lease never hides the results' answers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from app.leases import polls, rules
from tests.idle.support import auth, submit
from tests.leases.test_batch_protocol import batch, item
from tests.support.harness import Harness, SimMiner, running_app


async def results_then(m: SimMiner, items: list[dict], next_: int, wait: float = 0,
                       prefix: str = "/job", **more: Any) -> dict[str, Any]:
    r = await m.client.post(f"{prefix}/results", json={"results": items}, headers=m.auth,
                            params={"next": next_, "wait": wait, **more})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_results_are_stored_then_the_next_jobs_leased(settings_factory, any_db) -> None:
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        first = [(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(2)]
        m = await api.miner()
        jobs = await batch(m, 2)
        later = [(await api.chat(key, f"later {i}")).json()["job_id"] for i in range(3)]
        out = await results_then(m, [item(m, jobs[0], "a0"), item(m, jobs[1], "a1"),
                                     item(m, {"job_id": "no-such", "lease_id": "x"}, "?")], 2)
        assert [(o["job_id"], o["status"], o.get("error")) for o in out["results"]] == [
            (first[0], "completed", None), (first[1], "completed", None),
            ("no-such", "rejected", "job_not_found")]
        assert [j["job_id"] for j in out["jobs"]] == later[:2]  # oldest first, at most `next`
        assert out["lease_error"] is None
        assert all(j["prompt"].startswith("later") and j["attempt"] == 1 for j in out["jobs"])
        for job_id, answer in zip(first, ("a0", "a1"), strict=True):
            r = await api.client.get(f"/chat/{job_id}", headers=auth(key))
            assert (r.json()["status"], r.json()["response"]) == ("completed", answer)
        # the leased ones are leased as by GET /job/batch: their results complete them, and
        # with nothing left in the queue the lease part answers no jobs
        out = await results_then(m, [item(m, j, "b") for j in out["jobs"]], 4)
        assert [o["status"] for o in out["results"]] == ["completed"] * 2
        assert [j["job_id"] for j in out["jobs"]] == later[2:]
        # without `next` the answer is what it always was: the results alone
        r = await m.client.post("/job/results", json={"results": [item(m, out["jobs"][0], "c")]},
                                headers=m.auth)
        assert r.status_code == 200 and set(r.json()) == {"results"}


async def test_the_answer_is_out_before_the_lease_part_waits(api: Harness) -> None:
    key = await api.api_key()
    sent = (await api.chat(key, "first")).json()["job_id"]
    m = await api.miner()
    [job] = await batch(m, 1)
    waiting = asyncio.create_task(results_then(m, [item(m, job, "done")], 8, wait=10))
    r = await api.client.get(f"/chat/{sent}", params={"wait": 5}, headers=auth(key))
    assert r.json()["status"] == "completed"  # the client has its answer while the miner waits
    assert not waiting.done()
    nxt = (await api.chat(key, "second")).json()["job_id"]
    out = await asyncio.wait_for(waiting, 10)  # woke on the push, did not wait to fill 8
    assert [o["status"] for o in out["results"]] == ["completed"]
    assert [j["job_id"] for j in out["jobs"]] == [nxt]
    # a wait that runs out answers the results and no jobs
    out = await results_then(m, [item(m, out["jobs"][0], "done too")], 8, wait=0.3)
    assert [o["status"] for o in out["results"]] == ["completed"] and out["jobs"] == []


async def test_a_refused_lease_rides_beside_the_stored_results(settings_factory,
                                                               sqlite_url) -> None:
    async with running_app(settings_factory(sqlite_url, miner_max_polls=1)) as api:
        key = await api.api_key()
        sent = (await api.chat(key, "q")).json()["job_id"]
        m = await api.miner()
        [job] = await batch(m, 1)
        name = polls.key(api.settings.redis_prefix, m.address)
        await api.ctx.redis.set(name, 1, ex=60)  # the wallet's one poll, in another process
        out = await results_then(m, [item(m, job, "stored")], 4, wait=5)
        assert out["results"][0]["status"] == "completed" and out["jobs"] == []
        assert out["lease_error"] == {
            "status": 429, "error": "too_many_polls", "retry_after_s": polls.RETRY_AFTER_S,
            "detail": out["lease_error"]["detail"]} and "MINER_MAX_POLLS" in \
            out["lease_error"]["detail"]
        r = await api.client.get(f"/chat/{sent}", headers=auth(key))
        assert r.json()["response"] == "stored"
        # a job that waits is still handed out, as by GET /job/batch: taking it needs no slot
        nxt = (await api.chat(key, "next")).json()["job_id"]
        out = await results_then(m, [item(m, job, "stored")], 4, wait=5)
        assert out["results"][0]["status"] == "completed"  # a repeat: the same answer
        assert [j["job_id"] for j in out["jobs"]] == [nxt] and out["lease_error"] is None


async def test_redis_failing_the_lease_part_rides_beside_the_stored_results(
        settings_factory, any_db, private_redis) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db, redis_url=private_redis.url)) as api:
        key = await api.api_key()
        sent = (await api.chat(key, "q")).json()["job_id"]
        m = await api.miner()
        [job] = await batch(m, 1)
        private_redis.stop()  # the queue goes away between the lease and the result
        out = await results_then(m, [item(m, job, "stored")], 4, wait=5)
        assert out["results"][0]["status"] == "completed" and out["jobs"] == []
        assert out["lease_error"] == {
            "status": 503, "error": "queue_unavailable", "retry_after_s": 5,
            "detail": "the job queue (Redis) is unavailable; retry later"}
        r = await api.client.get(f"/chat/{sent}", headers=auth(key))
        assert (r.json()["status"], r.json()["response"]) == ("completed", "stored")


async def test_the_database_failing_the_lease_part_rides_beside_the_stored_results(
        settings_factory, postgres_db) -> None:  # type: ignore[no-untyped-def]
    # The results commit; then the lease statement hangs past DB_COMMAND_TIMEOUT_S (another
    # session holds the wallet's leasing lock, which only a lease takes): the results are
    # answered, the lease part says 503, and the popped job is back in the queue at once.
    settings = settings_factory(postgres_db, db_command_timeout_s=0.5,
                                run_maintenance_in_api=False)
    async with running_app(settings) as api:
        key = await api.api_key()
        sent = (await api.chat(key, "q")).json()["job_id"]
        m = await api.miner()
        [job] = await batch(m, 1)
        waiting = (await api.chat(key, "waits for the lease")).json()["job_id"]
        db = await asyncpg.connect(postgres_db.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            wallet = await db.fetchval("SELECT id FROM miners WHERE address = $1", m.address)
            await db.execute("SELECT pg_advisory_lock($1, $2)", rules.LEASING_LOCK, wallet)
            out = await results_then(m, [item(m, job, "stored")], 4, wait=5)
        finally:
            await db.close()  # and its lock with it
        assert out["results"][0]["status"] == "completed" and out["jobs"] == []
        assert out["lease_error"] == {
            "status": 503, "error": "dependency_timeout", "retry_after_s": 5,
            "detail": out["lease_error"]["detail"]}
        r = await api.client.get(f"/chat/{sent}", headers=auth(key))
        assert (r.json()["status"], r.json()["response"]) == ("completed", "stored")
        assert [j["job_id"] for j in await batch(m, 4)] == [waiting]  # requeued, not lost


async def test_a_lease_ended_by_a_deadlock_rides_beside_the_stored_results(
        settings_factory, postgres_db) -> None:  # type: ignore[no-untyped-def]
    # A real deadlock: another session locks the queued job's row, the lease statement takes
    # the wallet's leasing lock and waits for that row, then the other session asks for the
    # leasing lock. PostgreSQL ends one of the two: the lease (its deadlock_timeout, 1 s, runs
    # out first). The results are answered, the lease part says 503 database_conflict, and the
    # job is back in the queue at once.
    settings = settings_factory(postgres_db, run_maintenance_in_api=False)
    async with running_app(settings) as api:
        key = await api.api_key()
        (await api.chat(key, "q")).json()
        m = await api.miner()
        [job] = await batch(m, 1)
        waiting = (await api.chat(key, "waits for the lease")).json()["job_id"]
        db = await asyncpg.connect(postgres_db.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                await db.execute("SET deadlock_timeout = '10s'")  # the lease detects it
            wallet = await db.fetchval("SELECT id FROM miners WHERE address = $1", m.address)
            async with db.transaction():
                await db.execute("SELECT 1 FROM chat_jobs WHERE id = $1 FOR UPDATE", waiting)
                part = asyncio.create_task(results_then(m, [item(m, job, "stored")], 4, wait=5))
                for _ in range(200):  # until the lease waits for the row
                    if await db.fetchval(
                            "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> "
                            "pg_backend_pid() AND locktype = 'transactionid'"):
                        break
                    await asyncio.sleep(0.025)
                else:
                    raise AssertionError("the lease never waited for the locked row")
                await db.execute("SELECT pg_advisory_xact_lock($1, $2)", rules.LEASING_LOCK,
                                 wallet)
        finally:
            await db.close()
        out = await asyncio.wait_for(part, 10)
        assert out["results"][0]["status"] == "completed" and out["jobs"] == []
        assert out["lease_error"] == {
            "status": 503, "error": "database_conflict", "retry_after_s": 1,
            "detail": out["lease_error"]["detail"]}
        assert [j["job_id"] for j in await batch(m, 4)] == [waiting]  # requeued, not lost


async def test_bad_lease_parameters_are_refused_before_anything_is_stored(api: Harness) -> None:
    key = await api.api_key()
    sent = (await api.chat(key, "q")).json()["job_id"]
    m = await api.miner()
    [job] = await batch(m, 1)
    for params in ({"next": 65}, {"next": -1}, {"next": "many"}, {"next": 1, "wait": 31},
                   {"next": 1, "model": "bad model"}):
        r = await m.client.post("/job/results", json={"results": [item(m, job, "x")]},
                                headers=m.auth, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"] == "validation_error"
    r = await api.client.get(f"/chat/{sent}", headers=auth(key))
    assert r.json()["status"] == "assigned"  # none of those stored the result


async def test_idle_results_then_lease_yield_to_chat(api: Harness) -> None:
    key = await api.api_key(scopes="chat,idle")
    ids = [(await submit(api, key, "one two", max_tokens=3))["job_id"] for _ in range(3)]
    m = await api.miner()
    [first] = await batch(m, 1, prefix="/idle-job")
    out = await results_then(m, [item(m, first, "a b", output_tokens=None)], 8,
                             prefix="/idle-job")
    assert out["results"][0]["status"] == "completed"
    assert [j["job_id"] for j in out["jobs"]] == ids[1:]
    assert all(j["kind"] == "idle" for j in out["jobs"])
    await submit(api, key)
    await api.chat(key, "urgent")  # chat first: the idle lease part yields at once
    out = await results_then(m, [item(m, j, "c d", output_tokens=None) for j in out["jobs"]],
                             8, wait=5, prefix="/idle-job")
    assert [o["status"] for o in out["results"]] == ["completed"] * 2 and out["jobs"] == []
