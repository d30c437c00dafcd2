"""H3 (issue 23): a request that waits ends as soon as its client hangs up, over a real socket.

uvicorn counts a request against SERVER_MAX_CONNECTIONS until its handler returns: abandoned
waits (a non-streamed /v1 answer, `POST /chat?wait`, `GET /chat/{id}?wait`, miners' long-polls)
used to keep their slots for up to their whole wait, and once they filled SERVER_MAX_CONNECTIONS
every new request, /health included, was a 503.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from app.leases.polls import key as poll_key
from app.serving import uvicorn_limits
from tests.support.harness import running_app, until
from tests.support.live import live_uvicorn

MODEL = "hangup-test-7b"
LIMIT = 4  # SERVER_MAX_CONNECTIONS: a round of LIMIT - 2 abandoned waits fits beside the
# test's own keep-alive connection; two rounds held would fill it


async def _abandon(base: str, requests: list[tuple[str, str, dict[str, str], Any]]) -> None:
    """Send each request on its own socket, let it reach its wait, then hang up on all."""
    where = urlsplit(base)
    streams = []
    for method, path, headers, body in requests:
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        data = b"" if body is None else orjson.dumps(body)
        head = [f"{method} {path} HTTP/1.1", f"Host: {where.netloc}",
                f"Content-Length: {len(data)}", "Content-Type: application/json",
                *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
        streams.append((reader, writer))
    await asyncio.sleep(0.5)  # every request is in its wait now (none answers within 20 s)
    for (reader, writer), request in zip(streams, requests, strict=True):
        try:  # still waiting: nothing was answered (no error, no 503 either)
            early = await asyncio.wait_for(reader.read(200), 0.05)
        except TimeoutError:
            early = None
        assert early is None, (request[:2], early)
        writer.close()
    for _, writer in streams:
        await writer.wait_closed()


async def test_abandoned_waits_free_their_server_slots_at_once(settings_factory, any_db):  # type: ignore[no-untyped-def]
    settings = settings_factory(any_db, server_max_connections=LIMIT, openai_max_wait_s=60,
                                chat_max_wait_s=60, miner_max_wait_s=30)
    async with running_app(settings) as api:
        key = await api.api_key("hangup-co")
        miner = await api.miner()
        r = await api.client.get("/job/next", params={"wait": 0, "model": MODEL},
                                 headers=miner.auth)  # declares the model /v1 asks for
        assert r.status_code == 204
        queued = await api.chat(key)  # a job whose status a client waits on
        assert queued.status_code == 202
        job_id = queued.json()["job_id"]
        idle_key = await api.api_key("hangup-co", "idle")
        idle = await api.client.post("/idle-job", json={"prompt": "hi", "max_tokens": 8},
                                     headers={"Authorization": f"Bearer {idle_key}"})
        assert idle.status_code == 202, idle.text
        business = {"Authorization": f"Bearer {key}"}
        v1 = ("POST", "/v1/chat/completions", business,
              {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        waits = {
            # first, while no chat job is queued (the one above is leased away here)
            "long-polls": [("GET", "/job/next?wait=20&model=other", miner.auth, None),
                           ("GET", "/job/batch?wait=20&max=4&model=other", miner.auth, None)],
            # a result request's lease part (POST /job/results?next=): its results answered
            # (an unknown job), then it waits like GET /job/batch
            "results, then a long-poll": [
                ("POST", "/job/results?next=4&wait=20&model=other", miner.auth,
                 {"results": [{"job_id": "no-such-job", "lease_id": "x", "output": "o",
                               "signature": "0x" + "11" * 65}]})],
            # (an idle job is queued: an idle long-poll would take it, and idle long-polls
            # already look for waiting chat every 0.5 s, and so for a hang-up)
            "/v1 without stream": [v1],
            "POST /chat?wait": [("POST", "/chat?wait=20", business, {"message": "hello"})],
            "GET /chat/{id}?wait": [("GET", f"/chat/{job_id}?wait=20", business, None)],
            "GET /idle-job/{id}?wait": [("GET", f"/idle-job/{idle.json()['job_id']}?wait=20",
                                         {"Authorization": f"Bearer {idle_key}"}, None)],
        }
        # the queued job: leased by a miner that keeps it, so the waits on it go on waiting
        taken = await api.client.get("/job/next", params={"wait": 0}, headers=miner.auth)
        assert taken.status_code == 200 and taken.json()["job_id"] == job_id
        with live_uvicorn(settings, **uvicorn_limits(settings)) as (base, server):
            async def idle() -> bool:
                return not server.server_state.tasks

            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                for what, kinds in waits.items():
                    for _ in range(2):  # twice a round that fits: held, 4 slots would be taken
                        await _abandon(base, (kinds * LIMIT)[:LIMIT - 2])
                        try:
                            await until(idle, timeout=5)
                        except TimeoutError:
                            pytest.fail(f"abandoned {what} still hold "
                                        f"{len(server.server_state.tasks)} server slots")
                    health = await client.get("/health")
                    assert health.status_code == 200, (what, health.text)
        # the long-polls gave their MINER_MAX_POLLS slots back, and the jobs go on
        assert not await api.ctx.redis.exists(poll_key(settings.redis_prefix, miner.address))
        r = await api.client.get(f"/chat/{job_id}", headers=business)
        assert r.json()["status"] == "assigned"
