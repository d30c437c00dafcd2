"""The load generator's batch-protocol miner against a protocol-faithful backend on 127.0.0.1
(tests/miner/batch_server.py, which verifies every signature): leases up to batch_max jobs per
request, posts their results together (with the next lease in the same request, ?next=, unless
"batch-split"), retries a failed request whole, counts a rejected item as an error and never
posts it again."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bench.load import Role, Stats, Window, _batch_miner, _sign_in
from bench.signer import Wallet
from tests.miner.batch_server import ProtocolServer
from tests.miner.support import UvicornThread


@pytest.mark.parametrize("protocol", ["batch", "batch-split"])
async def test_batch_miner_leases_and_answers_in_batches(protocol: str) -> None:
    srv = ProtocolServer(fail_results=1)
    with UvicornThread(factory=srv.app) as http_srv:
        stolen = srv.add_job("q0", steal_first_lease=True)
        ids = [srv.add_job(f"q{i}") for i in range(1, 40)]
        stats = Stats()
        async with aiohttp.ClientSession(http_srv.url) as http:
            miner = await _sign_in(http, Wallet())
            role = Role("miners", 1, http_srv.url, wait_s=1, batch_max=16, protocol=protocol)
            task = asyncio.create_task(
                _batch_miner(http, miner, role, Window(0, time.time() + 60), stats))
            deadline = time.monotonic() + 20
            # (the last results' answer comes when their lease part's wait ends)
            while ((sum(srv.posted.values()) < 40 or stats.done < len(ids))
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert srv.requests["GET /job/next"] == 0 and srv.requests["POST /job/result"] == 0
    assert srv.lease_sizes[:3] == [16, 16, 8] and sum(srv.lease_sizes) == 40
    if protocol == "batch":  # after the first GET, each batch came with the previous results
        assert srv.next_sizes[:2] == [16, 8] and srv.requests["GET /job/batch"] >= 1
        assert srv.lease_sizes[1:3] == srv.next_sizes[:2]
    else:  # results alone, a GET /job/batch after each
        assert srv.next_sizes == [] and srv.requests["GET /job/batch"] >= 3
    assert all(srv.jobs[j].status == "completed" for j in ids)
    assert stats.done == len(ids)
    # the 503 was retried as a whole; the rejected item was counted and posted only once
    assert stats.errors == {"results 503": 1, "result lease_not_current": 1}
    assert srv.posted[stolen] == 1 and srv.jobs[stolen].status == "leased"
