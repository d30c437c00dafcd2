"""Over real sockets: a miner that hangs up on its long-poll is not handed a lease."""

from __future__ import annotations

import asyncio

import httpx
from eth_account import Account

from tests.support.harness import SimMiner
from tests.support.live import live_server


async def test_a_miner_that_hung_up_gets_no_lease(settings_factory):  # type: ignore[no-untyped-def]
    settings = settings_factory()
    with live_server(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            from app.accounts.keys import issue_api_key
            key = await issue_api_key(settings.database_url, "acme", "chat")
            quitter, worker = SimMiner(client, Account.create()), SimMiner(client, Account.create())
            await quitter.register()
            await worker.register()
            try:
                await client.get("/job/next", params={"wait": 5}, headers=quitter.auth, timeout=0.3)
            except httpx.ReadTimeout:
                pass  # the quitter hangs up while its long-poll is still blocked
            await asyncio.sleep(0.2)
            r = await client.post("/chat", json={"message": "hi"},
                                  headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 202
            job = await worker.next_job(wait=8)  # after the server noticed the hang-up
            assert job is not None and job["job_id"] == r.json()["job_id"]
            assert job["attempt"] == 1  # nobody spent a delivery on the quitter
