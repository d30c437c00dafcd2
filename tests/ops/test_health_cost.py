"""M4 (issue 23, /health): a health check costs the chain at most one head read per
HEAD_POLL_S however often it is called (it made one RPC per call, unlimited), and each client
IP gets RATE_LIMIT_HEALTH_PER_MIN of them."""

from __future__ import annotations

import asyncio

from app import blockcache
from tests.support.harness import running_app


def count_rpc(w3, monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    provider, seen = w3.provider, []
    real = provider.make_request

    async def counted(method, params):  # type: ignore[no-untyped-def]
        seen.append(method)
        return await real(method, params)
    monkeypatch.setattr(provider, "make_request", counted)
    monkeypatch.setattr(provider, "_request_func_cache", (None, None))
    return seen


async def test_health_asks_the_chain_once_per_head_poll(settings_factory, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(blockcache, "HEAD_POLL_S", 30.0)  # this test's calls fit in one poll
    async with running_app(settings_factory(chain_rpc_url="eth-tester")) as api:
        rpc = count_rpc(api.ctx.chain.w3, monkeypatch)
        answers = await asyncio.gather(*(api.client.get("/health") for _ in range(20)))
        answers += [await api.client.get("/health") for _ in range(5)]
        assert all(r.status_code == 200 for r in answers)
        assert all(r.json()["checks"]["chain"]["ok"] for r in answers)
        assert rpc == ["eth_getBlockByNumber"], rpc  # 25 checks, a burst among them: one call

        async def down(method, params):  # type: ignore[no-untyped-def]
            rpc.append(method)
            raise ConnectionError("node unreachable")
        monkeypatch.setattr(api.ctx.chain.w3.provider, "make_request", down)
        monkeypatch.setattr(api.ctx.chain.w3.provider, "_request_func_cache", (None, None))
        monkeypatch.setattr(blockcache, "HEAD_POLL_S", 0.0)
        first = await api.client.get("/health")  # the next poll finds the node down
        monkeypatch.setattr(blockcache, "HEAD_POLL_S", 30.0)
        rpc.clear()
        answers = [first] + [await api.client.get("/health") for _ in range(5)]
        for r in answers:  # the chain is optional: degraded, not down, and no text of the error
            assert r.status_code == 200 and r.json()["status"] == "degraded", r.text
            assert r.json()["checks"]["chain"] == {**r.json()["checks"]["chain"], "ok": False,
                                                   "error": "ConnectionError"}
        assert rpc == []  # a down node is not asked again within the poll either


async def test_health_is_limited_per_client_ip(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(rate_limit_health_per_min=5)) as api:
        for path in ("/health", "/health", "/", "/health", "/"):
            assert (await api.client.get(path)).status_code == 200
        r = await api.client.get("/health")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"] == "rate_limited"
