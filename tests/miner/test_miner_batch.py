"""The miner's batch protocol against a protocol-faithful backend on 127.0.0.1
(tests/miner/batch_server.py), which verifies every signature and counts every request: leases
and results go in batches, a backend without the batch endpoints gets the single-job protocol,
and a rejected result never fails the others in its batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from miner.client import BackendClient, BackendRejected, LeaseLost
from miner.wallet import Wallet, recover_result_signer
from tests.miner.batch_server import ProtocolServer
from tests.miner.support import RunningMiner, UvicornThread, new_key
from tests.miner.test_miner_e2e import until


@pytest.fixture
def old_server() -> Iterator[ProtocolServer]:
    srv = ProtocolServer(batch=False)
    with UvicornThread(factory=srv.app) as http:
        srv.url = http.url  # type: ignore[attr-defined]
        yield srv


def completed(srv: ProtocolServer) -> int:
    return sum(1 for j in srv.jobs.values() if j.status == "completed")


class BadSignatureOnce(Wallet):
    """The miner's wallet, signing one job's first result over the wrong output (a miner bug)."""

    __slots__ = ("bad_job", "done")

    def __init__(self, wallet: Wallet, bad_job: str) -> None:
        super().__init__(wallet._account)
        self.bad_job, self.done = bad_job, False

    def sign_result(self, job_id: str, output: str, finish_reason: str | None = None) -> str:
        if job_id == self.bad_job and not self.done:
            self.done = True
            output += " (tampered)"
        return super().sign_result(job_id, output, finish_reason)


async def test_leases_and_posts_in_batches_each_result_signed(server, demo_model) -> None:
    # Generation takes about the same time for every job, as on a GPU server batching them,
    # so the eight jobs of each lease finish within the flush window (wide here, for a busy
    # machine running the miner, both servers and other tests).
    demo_model.control(delay=0.3)
    ids = [server.add_job(f"question {i}") for i in range(40)]
    async with RunningMiner(server.url, demo_model.url, concurrency=8, batch_window_ms=250) as m:
        await until(lambda: completed(server) == len(ids))
    assert m.rc == 0 and m.miner.stats.completed == len(ids)
    r = server.requests
    assert r["GET /job/next"] == 0 and r["POST /job/result"] == 0
    # N = the free slots: the concurrency at most, and several per request.
    assert server.lease_sizes[0] == 8 and max(server.lease_sizes) == 8
    assert sum(server.lease_sizes) == len(ids) and r["GET /job/batch"] <= 10
    # Results in batches: every result posted exactly once, most of them eight at a time.
    assert sum(server.batch_sizes) == len(ids) and r["POST /job/results"] <= 10
    assert set(server.posted.values()) == {1}
    for job_id in ids:  # each result carries its own signature, by the miner's wallet
        job = server.jobs[job_id]
        assert recover_result_signer(job_id, job.output, job.signature, job.finish_reason) == m.address
        assert job.attempts == 1


async def test_result_requests_bring_the_next_jobs(server, demo_model) -> None:
    demo_model.control(delay=0.2)
    ids = [server.add_job(f"question {i}") for i in range(24)]
    async with RunningMiner(server.url, demo_model.url, concurrency=4, batch_window_ms=150) as m:
        await until(lambda: completed(server) == len(ids))
    assert m.rc == 0 and m.miner.stats.completed == len(ids)
    r = server.requests
    # after the first GET, the slots a result request frees are filled by its answer: each
    # request asks for as many jobs as it carries results, and never more than the slots
    assert r["GET /job/batch"] <= 3 and sum(server.next_sizes) >= len(ids) - 8
    assert all(n <= 4 for n in server.lease_sizes)
    assert sum(server.lease_sizes) == len(ids) and set(server.posted.values()) == {1}
    assert all(server.jobs[i].attempts == 1 for i in ids)


async def test_a_backend_that_ignores_next_still_gets_every_result(demo_model) -> None:
    srv = ProtocolServer(takes_next=False)  # a backend from before POST .../results?next=
    with UvicornThread(factory=srv.app) as http:
        ids = [srv.add_job(f"question {i}") for i in range(12)]
        async with RunningMiner(http.url, demo_model.url, concurrency=4) as m:
            await until(lambda: completed(srv) == len(ids))
    assert m.rc == 0 and m.miner.stats.completed == len(ids)
    assert srv.next_sizes == [] and srv.requests["GET /job/batch"] >= 3
    assert sum(srv.lease_sizes) == len(ids) and set(srv.posted.values()) == {1}


async def test_idle_jobs_in_batches_once_chat_is_served(server, demo_model) -> None:
    chat = [server.add_job(f"question {i}") for i in range(3)]
    idle = [server.add_job(f"summarise {i}", kind="idle") for i in range(12)]
    async with RunningMiner(server.url, demo_model.url, concurrency=4, accept_idle=True) as m:
        await until(lambda: completed(server) == len(chat) + len(idle))
    assert m.rc == 0 and m.miner.stats.completed == len(chat) + len(idle)
    assert set(server.leased[:3]) == set(chat)  # chat first
    r = server.requests
    assert r["GET /idle-job/next"] == 0 and r["POST /idle-job/result"] == 0
    assert r["POST /job/result"] == 0
    # at most one result request a job, and most leases ride on them (?next=), not on GETs
    assert r["POST /idle-job/results"] <= len(idle) and r["GET /idle-job/batch"] < len(idle)
    assert sum(server.lease_sizes) == len(chat) + len(idle) and max(server.lease_sizes) > 1
    for job_id in idle:
        job = server.jobs[job_id]
        assert recover_result_signer(job_id, job.output, job.signature, job.finish_reason) == m.address


async def test_a_backend_without_batch_endpoints_gets_single_jobs(old_server, demo_model,
                                                                  caplog) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    ids = [old_server.add_job(f"question {i}") for i in range(6)]
    async with RunningMiner(old_server.url, demo_model.url, concurrency=3) as m:
        await until(lambda: completed(old_server) == len(ids))
        more = [old_server.add_job(f"later {i}") for i in range(3)]
        await until(lambda: completed(old_server) == len(ids) + len(more))
    assert m.rc == 0 and m.miner.stats.completed == len(ids) + len(more)
    r = old_server.requests
    assert r["GET /job/batch"] == 0  # 404s are not counted by the old server: check the miner
    assert not m.miner.batch and "no batch endpoints" in caplog.text
    assert caplog.text.count("no batch endpoints") == 1  # detected once
    assert r["POST /job/result"] == len(ids) + len(more) and r["GET /job/next"] >= 3


async def test_batch_off_uses_the_single_job_protocol(server, demo_model) -> None:
    ids = [server.add_job(f"question {i}") for i in range(5)]
    async with RunningMiner(server.url, demo_model.url, concurrency=2, batch="off") as m:
        await until(lambda: completed(server) == len(ids))
    assert m.rc == 0
    r = server.requests
    assert r["GET /job/batch"] == 0 and r["POST /job/results"] == 0
    assert r["POST /job/result"] == len(ids)


async def test_a_result_whose_lease_was_taken_is_dropped_the_others_complete(
        server, demo_model, caplog) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    stolen = server.add_job("question 0", steal_first_lease=True)
    others = [server.add_job(f"question {i}") for i in range(1, 6)]
    async with RunningMiner(server.url, demo_model.url, concurrency=6) as m:
        await until(lambda: completed(server) == len(others))
        await until(lambda: server.posted[stolen] == 1)
    assert m.rc == 0
    assert (m.miner.stats.completed, m.miner.stats.lost, m.miner.stats.released) == (5, 1, 0)
    assert server.jobs[stolen].status == "leased"  # another miner's now; never re-posted
    assert server.posted[stolen] == 1 and all(server.posted[j] == 1 for j in others)
    assert f"job {stolen} kind=chat status=lost" in caplog.text
    assert "lease_not_current" in caplog.text


async def test_a_result_with_a_bad_signature_is_rejected_alone_and_the_job_given_back(
        server, demo_model, caplog) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    ids = [server.add_job(f"question {i}") for i in range(4)]
    async with RunningMiner(server.url, demo_model.url, concurrency=4) as m:
        m.backend.wallet = BadSignatureOnce(m.wallet, ids[1])
        await until(lambda: completed(server) == len(ids))
    assert m.rc == 0
    assert (m.miner.stats.completed, m.miner.stats.released) == (4, 1)
    # the rejected job was released and answered again on its next delivery; the others once
    assert [server.jobs[j].attempts for j in ids] == [1, 2, 1, 1]
    assert f"job {ids[1]} kind=chat status=rejected" in caplog.text
    assert "invalid_result_signature" in caplog.text


async def test_a_failed_batch_request_is_retried(server, demo_model) -> None:
    server.fail_results = 2
    ids = [server.add_job(f"question {i}") for i in range(4)]
    async with RunningMiner(server.url, demo_model.url, concurrency=4) as m:
        await until(lambda: completed(server) == len(ids))
    assert m.rc == 0 and m.miner.stats.completed == len(ids)
    assert server.requests["POST /job/results"] >= 3  # two 503s, then accepted
    assert all(server.jobs[j].attempts == 1 for j in ids)


async def test_post_results_answers_per_item(server) -> None:
    ids = [server.add_job(f"question {i}") for i in range(3)]
    client = BackendClient(server.url, Wallet.from_private_key(new_key()))
    try:
        leases = await client.next_jobs("chat", 64, 1)
        assert [lease.job_id for lease in leases] == ids
        assert await client.next_jobs("chat", 5, 0) == []  # 204: none left
        leases[0].lease_id = "not-the-lease"
        client.wallet = BadSignatureOnce(client.wallet, ids[2])
        outcomes = await client.post_results("chat", [(lease, "answer", 1) for lease in leases])
        assert isinstance(outcomes[0], LeaseLost) and "lease_not_current" in str(outcomes[0])
        assert outcomes[1] is None
        assert isinstance(outcomes[2], BackendRejected)
        assert outcomes[2].code == "invalid_result_signature"
        assert [server.jobs[j].status for j in ids] == ["leased", "completed", "leased"]
        # the same accepted result again: completed again (idempotent)
        assert await client.post_results("chat", [(leases[1], "answer", 1)]) == [None]
    finally:
        await client.aclose()
