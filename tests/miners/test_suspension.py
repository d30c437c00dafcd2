"""Operators suspend and unsuspend a wallet: its sessions get 403 miner_suspended on every miner
endpoint and at sign-in, in every API process at once, and its leases go back to the queue."""

from __future__ import annotations

from eth_account import Account

from tests.idle.support import next_idle, operator_token, post_idle_result, submit
from tests.leases.test_batch_protocol import batch
from tests.support.harness import running_app, until


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_suspended_miner_stops_leasing_and_its_leases_go_back(settings_factory,
                                                                      any_db) -> None:
    operator = Account.create()
    settings = settings_factory(any_db, operator_addresses=[operator.address],
                                auth_cache_ttl_s=300)  # only the suspension may clear it
    async with running_app(settings) as api:
        key = await api.api_key(scopes="chat,idle")
        op = bearer(await operator_token(api.client, operator))
        a, b = await api.miner(), await api.miner()
        chat_ids = [(await api.chat(key, f"q{i}")).json()["job_id"] for i in range(2)]
        idle_id = (await submit(api, key))["job_id"]
        held = await batch(a, 2)
        idle = await next_idle(a)
        assert idle is not None and len(held) == 2

        r = await api.client.post(f"/miners/{a.address.lower()}/suspend", headers=op)
        assert r.status_code == 200, r.text
        assert r.json() == {"miner_id": r.json()["miner_id"], "address": a.address,
                            "suspended": True, "leases_returned": 3}

        # its sessions: 403 on every miner endpoint (the token is cached, the cache cleared)
        calls = [a.client.get("/job/next", headers=a.auth),
                 a.client.get("/idle-job/batch", headers=a.auth),
                 a.post_result(held[0], "late"),
                 post_idle_result(a, idle, "late"),
                 a.client.post(f"/job/{held[0]['job_id']}/extend",
                               json={"lease_id": held[0]["lease_id"]}, headers=a.auth)]
        for call in calls:
            r = await call
            assert (r.status_code, r.json()["error"]) == (403, "miner_suspended"), r.text
        # and it cannot sign in or register again
        message, signature = await a.signed_message()
        r = await api.client.post("/auth/login", json={"message": message, "signature": signature})
        assert (r.status_code, r.json()["error"]) == (403, "miner_suspended")
        message, signature = await a.signed_message()
        r = await api.client.post("/register_miner",
                                  json={"message": message, "signature": signature})
        assert (r.status_code, r.json()["error"]) == (403, "miner_suspended")

        # the jobs went back to the front at once, their delivery not counted
        again = await batch(b, 5)
        assert sorted(j["job_id"] for j in again) == sorted(chat_ids)
        assert all(j["attempt"] == 1 for j in again)
        got = await next_idle(b)
        assert got is not None and (got["job_id"], got["attempt"]) == (idle_id, 1)

        r = await api.client.post(f"/miners/{a.address}/unsuspend", headers=op)
        assert r.json()["suspended"] is False
        await api.chat(key, "welcome back")
        assert (await a.next_job(wait=2)) is not None  # the same token works again
        await a.register()  # and it may sign in again


async def test_a_suspension_reaches_every_api_process_at_once(settings_factory, any_db) -> None:
    operator = Account.create()
    settings = settings_factory(any_db, operator_addresses=[operator.address],
                                auth_cache_ttl_s=300)
    async with running_app(settings) as one, running_app(settings) as two:
        a = await one.miner()
        r = await two.client.get("/job/next", headers=a.auth)
        assert r.status_code == 204  # process two now remembers a's token
        op = bearer(await operator_token(one.client, operator))
        assert (await one.client.post(f"/miners/{a.address}/suspend",
                                      headers=op)).status_code == 200

        async def refused() -> bool:
            r = await two.client.get("/job/next", headers=a.auth)
            return r.status_code == 403 and r.json()["error"] == "miner_suspended"

        await until(refused, timeout=3)  # far below the 300 s the cache would keep it


async def test_only_operators_suspend_and_only_known_wallets(settings_factory) -> None:
    operator = Account.create()
    async with running_app(settings_factory(operator_addresses=[operator.address])) as api:
        a = await api.miner()
        r = await api.client.post(f"/miners/{a.address}/suspend", headers=a.auth)
        assert (r.status_code, r.json()["error"]) == (403, "insufficient_role")
        r = await api.client.post(f"/miners/{a.address}/suspend")
        assert r.status_code == 401
        op = bearer(await operator_token(api.client, operator))
        r = await api.client.post(f"/miners/{Account.create().address}/suspend", headers=op)
        assert (r.status_code, r.json()["error"]) == (404, "miner_not_found")
        r = await api.client.post("/miners/not-an-address/unsuspend", headers=op)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_address")
        for _ in range(2):  # idempotent
            r = await api.client.post(f"/miners/{a.address}/suspend", headers=op)
            assert r.status_code == 200 and r.json()["leases_returned"] == 0
        r = await api.client.get("/job/next", headers=a.auth)
        assert r.json()["error"] == "miner_suspended"
