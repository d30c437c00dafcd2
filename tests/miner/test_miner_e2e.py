"""The miner against the real backend (app.main.create_app on 127.0.0.1) and the demo model
server over real HTTP: sign-in, answers, signatures, tokens, and recovery from failures."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from miner.demo_model import LABEL
from miner.wallet import recover_result_signer
from tests.miner.support import RunningMiner


async def until(predicate, timeout: float = 20, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(step)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("batch", ["auto", "off"])
async def test_jobs_answered_signed_and_counted(backend, demo_model, caplog, batch) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url, concurrency=2, name="gpu-test",
                            batch=batch) as m:
        first = await backend.chat(key, "What are your opening hours?", context="Shop: Acme Bikes")
        sid = first["session_id"]
        a1 = await backend.answer(key, first["job_id"])
        assert a1["status"] == "completed"
        assert a1["response"].startswith(LABEL)
        assert "business context: yes" in a1["response"]
        assert "Conversation turns: 1;" in a1["response"]

        # Second turn: history (1 user + 1 assistant) + the prompt, not repeated: 3 turns.
        second = await backend.chat(key, "And on Sunday?", session_id=sid, context="Shop: Acme Bikes")
        a2 = await backend.answer(key, second["job_id"])
        assert "Conversation turns: 3;" in a2["response"]

        more = [await backend.chat(key, f"question {i}") for i in range(6)]
        answers = [await backend.answer(key, j["job_id"]) for j in more]
        assert all(a["status"] == "completed" for a in answers)
    assert m.rc == 0

    job_ids = [first["job_id"], second["job_id"], *(j["job_id"] for j in more)]
    total = 0
    for job_id in job_ids:
        j = backend.job(job_id)
        assert j["status"] == "completed" and j["answers"] == 1 and j["attempts"] == 1
        assert j["miner"] == m.address
        # the backend stored the miner's signature; it recovers to the miner's wallet
        assert recover_result_signer(job_id, j["response"], j["signature"], j["finish_reason"]) == m.address
        # tokens come from the model server's usage (the demo model counts words)
        assert j["output_tokens"] == len(j["response"].split()) > 0
        total += j["output_tokens"]
    (name, count, tokens), = backend.query(
        "SELECT name, job_count, tokens_generated FROM miners WHERE address = ?", m.address)
    assert (name, count, tokens) == ("gpu-test", len(job_ids), total)
    assert m.miner.stats.completed == len(job_ids) and m.miner.stats.output_tokens == total
    single, batched = backend.requests["POST /job/result"], backend.requests["POST /job/results"]
    assert (single, batched > 0) == ((0, True) if batch == "auto" else (len(job_ids), False))

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job ")]
    assert len(lines) == len(job_ids)
    assert all("status=completed" in line and "tokens=" in line and "seconds=" in line for line in lines)

    # A second run with the same wallet signs in (no second registration).
    async with RunningMiner(backend.url, demo_model.url, key=m.cfg.private_key) as again:
        job = await backend.chat(key, "hello again")
        assert (await backend.answer(key, job["job_id"]))["status"] == "completed"
    assert again.address == m.address
    assert backend.query("SELECT COUNT(*) FROM miners")[0][0] == 1


async def test_token_refresh_and_revoked_token(backend_factory, demo_model) -> None:
    backend = backend_factory(token_ttl_s=3)
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url) as m:
        for i in range(3):
            job = await backend.chat(key, f"q{i}")
            assert (await backend.answer(key, job["job_id"]))["status"] == "completed"
            await asyncio.sleep(1.6)
        assert m.backend.sign_ins >= 2  # refreshed before the 3 s token ran out
        # A token the backend no longer accepts: the next call gets 401 and signs in again.
        m.backend._token = "mia_t_bogus"
        job = await backend.chat(key, "after revocation")
        assert (await backend.answer(key, job["job_id"]))["status"] == "completed"
    assert m.miner.stats.completed == 4 and m.miner.stats.lost == 0


async def test_idle_jobs_answered_when_accepted_and_chat_comes_first(backend, demo_model) -> None:
    key = await backend.api_key(scopes="chat,idle")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=backend.url, headers=headers, timeout=60) as c:
        r = await c.post("/idle-job", json={"prompt": "Summarise the plot of Hamlet.", "max_tokens": 5})
        assert r.status_code == 202, r.text
        idle_id = r.json()["job_id"]
        async with RunningMiner(backend.url, demo_model.url, accept_idle=True) as m:
            chat = await backend.chat(key, "a chat job too")
            assert (await backend.answer(key, chat["job_id"]))["status"] == "completed"
            r = await c.get(f"/idle-job/{idle_id}", params={"wait": 30})
            done = r.json()
            assert done["status"] == "completed", done
            assert done["processed_by"] == "miner"
            assert done["result"].startswith(LABEL)
            assert done["output_tokens"] == 5 == len(done["result"].split())  # the job's max_tokens
        async with RunningMiner(backend.url, demo_model.url, accept_idle=False) as chat_only:
            r = await c.post("/idle-job", json={"prompt": "not for a chat-only miner"})
            other = r.json()["job_id"]
            chat = await backend.chat(key, "only chat here")
            assert (await backend.answer(key, chat["job_id"]))["status"] == "completed"
            assert (await c.get(f"/idle-job/{other}")).json()["status"] == "queued"
    assert m.miner.stats.completed == 2 and chat_only.miner.stats.completed == 1


async def test_model_server_failing_then_recovers(backend_factory, demo_model, caplog) -> None:
    # the only miner gets back the job it gave back once RETURNED_JOB_COOLDOWN_S has passed
    backend = backend_factory(returned_job_cooldown_s=1)
    key = await backend.api_key()
    demo_model.control(fail_status=503)
    async with RunningMiner(backend.url, demo_model.url) as m:
        job = await backend.chat(key, "are you there?")
        # The miner takes the job, the model fails, the job is given back with a reason.
        await until(lambda: m.miner.stats.released >= 1)
        j = backend.job(job["job_id"])
        assert j["status"] == "queued" and j["attempts"] == 1
        await asyncio.sleep(2)
        # While the model server fails, the miner takes no more jobs (no attempts burnt).
        assert backend.job(job["job_id"])["attempts"] == 1
        demo_model.control(fail_status=None)
        a = await backend.answer(key, job["job_id"], timeout=30)
        assert a["status"] == "completed"
    j = backend.job(job["job_id"])
    assert j["answers"] == 1 and j["attempts"] == 2
    assert m.miner.stats.completed == 1


async def test_model_server_down_then_back(backend, demo_model) -> None:
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url) as m:
        warm = await backend.chat(key, "warm up")
        assert (await backend.answer(key, warm["job_id"]))["status"] == "completed"
        demo_model.server.stop()  # connection refused from now on
        job = await backend.chat(key, "model is down")
        await until(lambda: m.miner.stats.released >= 1)
        await asyncio.sleep(1.5)
        demo_model.server.start()
        a = await backend.answer(key, job["job_id"], timeout=30)
        assert a["status"] == "completed"
    assert backend.job(job["job_id"])["answers"] == 1
    assert backend.job(job["job_id"])["attempts"] == 2


async def test_slow_model_lease_is_extended_not_redelivered(backend_factory, demo_model) -> None:
    # 4 s leases: the miner extends at half of what remains, so a 2 s margin, which survives a
    # loaded CI machine (with 2 s leases a slow extension now and then lost the lease)
    backend = backend_factory(lease_seconds=4)
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url, concurrency=2) as m:
        slow = await backend.chat(key, "think hard [demo:sleep=9]")
        fast = await backend.chat(key, "quick one")
        assert (await backend.answer(key, fast["job_id"]))["status"] == "completed"
        a = await backend.answer(key, slow["job_id"], timeout=30)
        assert a["status"] == "completed"
    j = backend.job(slow["job_id"])
    assert j["attempts"] == 1 and j["answers"] == 1  # 9 s on a 4 s lease: extended, never re-leased
    assert m.miner.stats.lost == 0


async def test_backend_restart_mid_job_and_while_polling(backend, demo_model, caplog) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url) as m:
        job = await backend.chat(key, "long answer [demo:sleep=3]")
        await until(lambda: backend.job(job["job_id"])["status"] == "assigned")
        backend.server.stop()   # the backend dies while the miner is generating
        await asyncio.sleep(4)  # the generation finishes; posting the result fails meanwhile
        backend.server.start()  # same database, same Redis, same port
        a = await backend.answer(key, job["job_id"], timeout=40)
        assert a["status"] == "completed"
        # and it keeps serving after the restart
        later = await backend.chat(key, "after the restart")
        assert (await backend.answer(key, later["job_id"], timeout=30))["status"] == "completed"
        # Down while the miner long-polls: it backs off, then resumes.
        backend.server.stop()
        await asyncio.sleep(2.5)
        backend.server.start()
        last = await backend.chat(key, "after the second restart")
        assert (await backend.answer(key, last["job_id"], timeout=30))["status"] == "completed"
    assert any("backend:" in r.getMessage() and "retrying in" in r.getMessage()
               for r in caplog.records), "the miner should have logged its backoff while polling"
    for job_id in (job["job_id"], later["job_id"], last["job_id"]):
        j = backend.job(job_id)
        assert j["answers"] == 1 and j["miner"] == m.address


async def test_no_system_role_for_strict_chat_templates(backend, demo_model) -> None:
    demo_model.control(strict_roles=True)  # like Mixtral-Instruct: no system role, strict turns
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url, no_system_role=True) as m:
        first = await backend.chat(key, "Do you ship to Norway?", context="Shop: Acme Bikes")
        a1 = await backend.answer(key, first["job_id"])
        second = await backend.chat(key, "How long?", session_id=first["session_id"],
                                    context="Shop: Acme Bikes")
        a2 = await backend.answer(key, second["job_id"])
    assert a1["status"] == a2["status"] == "completed"
    assert "Conversation turns: 3;" in a2["response"] and "business context: no" in a2["response"]
    assert m.miner.stats.released == 0


async def test_rate_limited_miner_waits_and_carries_on(backend_factory, demo_model) -> None:
    # 2 requests a second for this wallet: the miner's long-polls and results meet 429s with
    # Retry-After, wait, and every job is still answered once.
    backend = backend_factory(rate_limit_address_per_s=2, rate_limit_address_burst=2)
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url, concurrency=2) as m:
        jobs = [await backend.chat(key, f"question {i}") for i in range(4)]
        answers = [await backend.answer(key, j["job_id"]) for j in jobs]
    assert all(a["status"] == "completed" for a in answers)
    assert all(backend.job(j["job_id"])["answers"] == 1 for j in jobs)
    # a 429 on a result is a wait, not a rejection: nothing was given back for redelivery
    assert m.miner.stats.released == 0
    assert all(backend.job(j["job_id"])["attempts"] == 1 for j in jobs)
    assert m.rc == 0


async def test_a_suspended_wallet_stops_the_miner_instead_of_signing_in_forever(
        backend_factory, demo_model, caplog) -> None:  # type: ignore[no-untyped-def]
    from eth_account import Account

    from miner.runner import SUSPENDED
    from tests.idle.support import operator_token

    operator = Account.create()
    backend = backend_factory(operator_addresses=[operator.address])
    key = await backend.api_key()
    async with RunningMiner(backend.url, demo_model.url) as m:
        job = await backend.chat(key, "before")
        assert (await backend.answer(key, job["job_id"]))["status"] == "completed"
        async with httpx.AsyncClient(base_url=backend.url, timeout=30) as op:
            token = await operator_token(op, operator)
            r = await op.post(f"/miners/{m.address.lower()}/suspend",
                              headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        rc = await asyncio.wait_for(m.task, 30)  # it stops on its own
        assert rc == SUSPENDED
        sign_ins = m.backend.sign_ins
    assert sign_ins <= 2 and "suspended by the network's operator" in caplog.text
