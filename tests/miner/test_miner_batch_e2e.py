"""The miner's batch protocol against the real backend (app.main.create_app on 127.0.0.1, which
verifies every signature), with the backend's requests counted at its door."""

from __future__ import annotations

import asyncio

import httpx

from miner.client import BackendClient, BackendRejected, LeaseLost
from miner.demo_model import LABEL
from miner.wallet import Wallet, recover_result_signer
from tests.miner.support import RunningMiner, new_key
from tests.miner.test_miner_batch import BadSignatureOnce


async def test_chat_jobs_leased_and_answered_in_batches(backend, demo_model) -> None:
    key = await backend.api_key()
    demo_model.control(delay=0.3)  # every job about as long: see test_miner_batch.py
    jobs = [await backend.chat(key, f"question {i}") for i in range(24)]
    async with RunningMiner(backend.url, demo_model.url, concurrency=8, batch_window_ms=250) as m:
        answers = await asyncio.gather(*(backend.answer(key, j["job_id"]) for j in jobs))
    assert m.rc == 0 and all(a["status"] == "completed" for a in answers)
    r = backend.requests
    assert r["GET /job/next"] == 0 and r["POST /job/result"] == 0
    # the first GET, then mostly the result requests' own leases (?next=)
    assert 1 <= r["GET /job/batch"] <= 8 and 3 <= r["POST /job/results"] <= 8
    assert r["GET /job/batch"] + r["POST /job/results"] <= 12
    for job in jobs:  # each result signed on its own and verified by the backend
        j = backend.job(job["job_id"])
        assert j["status"] == "completed" and j["answers"] == 1 and j["attempts"] == 1
        assert recover_result_signer(job["job_id"], j["response"], j["signature"],
                                     j["finish_reason"]) == m.address
        assert j["response"].startswith(LABEL)
    assert backend.query("SELECT job_count FROM miners WHERE address = ?",
                         m.address)[0][0] == len(jobs)


async def test_idle_jobs_leased_and_answered_in_batches(backend, demo_model) -> None:
    key = await backend.api_key(scopes="chat,idle")
    async with httpx.AsyncClient(base_url=backend.url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        ids = []
        for i in range(8):
            r = await c.post("/idle-job", json={"prompt": f"Summarise {i}", "max_tokens": 5})
            assert r.status_code == 202, r.text
            ids.append(r.json()["job_id"])
        async with RunningMiner(backend.url, demo_model.url, concurrency=4,
                                accept_idle=True) as m:
            done = [(await c.get(f"/idle-job/{i}", params={"wait": 30})).json() for i in ids]
    assert m.rc == 0
    assert all(d["status"] == "completed" and d["processed_by"] == "miner" for d in done), done
    assert all(d["output_tokens"] == 5 for d in done)
    r = backend.requests
    assert r["GET /idle-job/next"] == 0 and r["POST /idle-job/result"] == 0
    assert r["GET /idle-job/batch"] >= 1 and 1 <= r["POST /idle-job/results"] < len(ids)


async def test_each_result_in_a_batch_is_answered_on_its_own(backend) -> None:
    key = await backend.api_key()
    ids = [(await backend.chat(key, f"question {i}"))["job_id"] for i in range(3)]
    client = BackendClient(backend.url, Wallet.from_private_key(new_key()))
    try:
        leases = []
        while len(leases) < 3:
            leases += await client.next_jobs("chat", 3 - len(leases), 5)
        by_id = {lease.job_id: lease for lease in leases}
        ordered = [by_id[i] for i in ids]
        good_lease = ordered[1].lease_id
        ordered[0].lease_id = "00000000-0000-0000-0000-000000000000"
        client.wallet = BadSignatureOnce(client.wallet, ids[2])
        outcomes = await client.post_results("chat", [(lease, "answer", 1) for lease in ordered])
        assert isinstance(outcomes[0], LeaseLost), outcomes
        assert outcomes[1] is None
        assert isinstance(outcomes[2], BackendRejected)
        assert outcomes[2].code == "invalid_result_signature"
        assert [backend.job(i)["status"] for i in ids] == ["assigned", "completed", "assigned"]
        # the accepted result again: "completed" again, and still answered once
        assert ordered[1].lease_id == good_lease
        assert await client.post_results("chat", [(ordered[1], "answer", 1)]) == [None]
        assert backend.job(ids[1])["answers"] == 1
    finally:
        await client.aclose()
