"""GET /job/batch and POST /job/results (and the idle twins): N jobs per request, each leased and
completed exactly as by the single endpoints; one bad item never fails the others."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import func, select

from app.models import ChatJob, ChatLog, IdleJob, Miner, RevenueEvent
from tests.idle.support import auth, submit
from tests.support.harness import Harness, SimMiner, running_app


async def batch(m: SimMiner, most: int, wait: float = 0, prefix: str = "/job") -> list[dict]:
    r = await m.client.get(f"{prefix}/batch", params={"max": most, "wait": wait}, headers=m.auth)
    if r.status_code == 204:
        return []
    assert r.status_code == 200, r.text
    return r.json()["jobs"]  # type: ignore[no-any-return]


def item(m: SimMiner, job: dict[str, Any], output: str, **over: Any) -> dict[str, Any]:
    body = {"job_id": job["job_id"], "lease_id": job["lease_id"], "output": output,
            "output_tokens": 2, "signature": m.sign_result(job["job_id"], output)}
    return {**body, **over}


async def post_results(m: SimMiner, items: list[dict], prefix: str = "/job") -> list[dict]:
    r = await m.client.post(f"{prefix}/results", json={"results": items}, headers=m.auth)
    assert r.status_code == 200, r.text
    return r.json()["results"]  # type: ignore[no-any-return]


async def test_a_batch_leases_several_and_completes_them_with_mixed_items(settings_factory,
                                                                          any_db) -> None:
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key()
        sent = [(await api.chat(key, f"question {i}")).json()["job_id"] for i in range(5)]
        a, b = await api.miner(), await api.miner()
        jobs = await batch(a, 4)
        assert [j["job_id"] for j in jobs] == sent[:4]  # oldest first, at most `max`
        assert len({j["lease_id"] for j in jobs}) == 1 and all(j["attempt"] == 1 for j in jobs)
        assert all(j["prompt"] == f"question {i}" for i, j in enumerate(jobs))
        [other] = await batch(b, 10)
        assert other["job_id"] == sent[4]

        items = [item(a, jobs[0], "one"),
                 item(a, jobs[1], "two", signature=a.sign_result(jobs[1]["job_id"], "not two")),
                 item(a, jobs[2], "three", lease_id="someone-elses-lease"),
                 item(a, other, "stolen"),  # b's job: a holds no lease on it
                 item(a, jobs[3], "four"),
                 item(a, jobs[0], "one"),  # repeated in the same request: the same answer
                 item(a, {"job_id": "no-such-job", "lease_id": "x"}, "ghost")]
        out = await post_results(a, items)
        assert [(o["job_id"], o["status"], o.get("error")) for o in out] == [
            (jobs[0]["job_id"], "completed", None),
            (jobs[1]["job_id"], "rejected", "invalid_result_signature"),
            (jobs[2]["job_id"], "rejected", "lease_not_current"),
            (other["job_id"], "rejected", "lease_not_current"),
            (jobs[3]["job_id"], "completed", None),
            (jobs[0]["job_id"], "completed", None),
            ("no-such-job", "rejected", "job_not_found")]
        assert all(o["detail"] for o in out if o["status"] == "rejected")
        # posted again later: the accepted ones answer the same, the others are still refused
        again = await post_results(a, [items[0], items[2]])
        assert [o["status"] for o in again] == ["completed", "rejected"]

        async with api.ctx.db.sessions() as s:
            done = dict((await s.execute(select(ChatJob.id, ChatJob.response)
                                         .where(ChatJob.status == "completed"))).all())
            assistant = (await s.execute(select(func.count()).select_from(ChatLog)
                                         .where(ChatLog.role == "assistant"))).scalar()
            miner = (await s.execute(select(Miner).where(Miner.address == a.address))).scalar()
        assert done == {jobs[0]["job_id"]: "one", jobs[3]["job_id"]: "four"}
        assert assistant == 2  # one assistant turn per completed job, never one per item
        # credited our count ("one", "four": a token each), not the 2 each reported
        assert (miner.job_count, miner.tokens_generated) == (2, 2)
        # the client sees the answer
        r = await api.client.get(f"/chat/{jobs[3]['job_id']}", headers=auth(key))
        assert r.json()["response"] == "four"
        # the rejected ones are still a's to finish with the right signature
        out = await post_results(a, [item(a, jobs[1], "two")])
        assert out[0]["status"] == "completed"


async def test_batch_long_polls_and_answers_as_soon_as_one_job_is_there(api: Harness) -> None:
    key = await api.api_key()
    m = await api.miner()
    assert await batch(m, 8) == []  # 204 at once with wait=0
    poll = asyncio.create_task(batch(m, 8, wait=10))
    await asyncio.sleep(0.3)
    start = time.monotonic()
    job_id = (await api.chat(key, "now")).json()["job_id"]
    jobs = await asyncio.wait_for(poll, 10)
    assert [j["job_id"] for j in jobs] == [job_id]
    assert time.monotonic() - start < 5  # woke on the push, did not wait to fill 8


async def test_whole_request_errors_stay_whole(api: Harness) -> None:
    m = await api.miner()
    key = await api.api_key()
    r = await api.client.get("/job/batch", params={"max": 65}, headers=m.auth)
    assert r.status_code == 422
    r = await api.client.get("/job/batch", params={"max": 2})
    assert r.status_code == 401
    r = await api.client.get("/job/batch", params={"max": 2}, headers=auth(key))
    assert r.status_code == 401  # an API key is not a miner's token
    for body in ({"results": []}, {"results": "x"}, {"results": [{"job_id": "a"}]},
                 {"results": [{"job_id": "a", "lease_id": "b", "output": "c",
                               "signature": "0x00"}] * 65}):
        r = await api.client.post("/job/results", json=body, headers=m.auth)
        assert r.status_code in (400, 422), (body, r.text)
        assert r.json()["error"]


async def test_idle_batch_bills_each_job_once_and_yields_to_chat(api: Harness) -> None:
    key = await api.api_key(scopes="chat,idle")
    ids = [(await submit(api, key, "one two three four", max_tokens=3))["job_id"] for _ in range(3)]
    m = await api.miner()
    jobs = await batch(m, 8, prefix="/idle-job")
    assert [j["job_id"] for j in jobs] == ids and all(j["kind"] == "idle" for j in jobs)
    items = [item(m, j, "a b c d e", output_tokens=None) for j in jobs]
    out = await post_results(m, items + items[:1], prefix="/idle-job")
    assert [o["status"] for o in out] == ["completed"] * 4
    async with api.ctx.db.sessions() as s:
        events = (await s.execute(select(func.count()).select_from(RevenueEvent))).scalar()
        billed = (await s.execute(select(func.sum(IdleJob.output_tokens)))).scalar()
    assert events == 3 and billed == 9  # capped at max_tokens=3 each, one event per job
    # chat first: while a chat job waits, the idle batch answers 204 at once
    await submit(api, key)
    await api.chat(key, "urgent")
    assert await batch(m, 8, wait=5, prefix="/idle-job") == []
