"""Rate limits: token buckets in Redis per API key, per wallet and per client IP (app/ratelimit.py).

The bucket arithmetic is checked exactly with an injected clock against the real Redis; the
limits themselves through the real app over HTTP. No assertion depends on how fast a machine is:
where time passes it only ever adds tokens, and the bounds allow for that."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid

import httpx
from eth_account import Account
import pytest
from redis.asyncio import Redis

from app.localredis import LocalRedis, free_port
from app import __version__
from app.main import ROUTERS
from app.openapi import build_openapi
from app.errors import RateLimited
from app.ratelimit import Rate, RateLimiter
from app.web import all_endpoints
from tests.support.harness import SimMiner, running_app, until
from tests.support.live import live_server

T0 = 1_700_000_000_000  # an injected "now", in ms


@pytest.fixture
async def redis(redis_url):  # type: ignore[no-untyped-def]
    client = Redis.from_url(redis_url)
    prefix = f"test-rl-{uuid.uuid4().hex[:10]}"
    yield client, prefix
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def assert_429(r: httpx.Response, retry_after: int | None = None) -> int:
    assert r.status_code == 429, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "rate_limited" and r.json()["detail"]
    seconds = int(r.headers["retry-after"])  # whole seconds, an integer
    assert seconds >= 1
    if retry_after is not None:
        assert seconds == retry_after
    return seconds


# --- the bucket, exactly -----------------------------------------------------------------------

async def test_burst_then_exact_refill(redis) -> None:  # type: ignore[no-untyped-def]
    client, prefix = redis
    rl = RateLimiter(client, prefix)
    rate = Rate.per_second(3, 5)  # 3/s: one token every 333.33... ms, kept exact
    got = [await rl.hit("key", "a", rate, now_ms=T0) for _ in range(6)]
    assert [d.allowed for d in got] == [True] * 5 + [False]
    assert [d.remaining for d in got[:5]] == [4, 3, 2, 1, 0]
    assert got[5].retry_after_ms == 334 and got[5].retry_after_s == 1  # ceil(1000/3)

    assert not (await rl.hit("key", "a", rate, now_ms=T0 + 333)).allowed  # 0.999 of a token
    assert (await rl.hit("key", "a", rate, now_ms=T0 + 334)).allowed
    # 2/3 of a token stayed after T0+334; by T0+2000 exactly 5 more have come in, no drift:
    # at T0+1999 that is 4 and 997/1000 (4 taken, the 5th due in 1 ms), at T0+2000 the 5th
    almost = [await rl.hit("key", "a", rate, now_ms=T0 + 1999) for _ in range(5)]
    assert [d.allowed for d in almost] == [True] * 4 + [False]
    assert almost[-1].retry_after_ms == 1
    assert (await rl.hit("key", "a", rate, now_ms=T0 + 2000)).allowed
    assert (await rl.hit("key", "a", rate, now_ms=T0 + 2000)).retry_after_ms == 334
    # idle for long: `burst` tokens, not more
    later = [await rl.hit("key", "a", rate, now_ms=T0 + 60_000) for _ in range(6)]
    assert [d.allowed for d in later] == [True] * 5 + [False]


async def test_many_small_steps_add_up_exactly(redis) -> None:  # type: ignore[no-untyped-def]
    client, prefix = redis
    rl = RateLimiter(client, prefix)
    rate = Rate(7, 1000, 2)  # 7 per second: one every 142.857... ms; never full below
    now, taken = T0, 0
    while now < T0 + 60_000:  # a minute in 1 ms steps would take long; 13 ms steps do
        if (await rl.hit("key", "steps", rate, now_ms=now)).allowed:
            taken += 1
        now += 13
    # the 2 of the full bucket, then exactly one per 1000/7 ms, never early or late
    assert taken == 2 + math.floor((now - 13 - T0) * 7 / 1000)


async def test_buckets_are_independent_and_capped(redis) -> None:  # type: ignore[no-untyped-def]
    client, prefix = redis
    rl = RateLimiter(client, prefix)
    rate = Rate.per_second(1, 2)
    for _ in range(2):
        assert (await rl.hit("key", "a", rate, now_ms=T0)).allowed
    assert not (await rl.hit("key", "a", rate, now_ms=T0)).allowed
    assert (await rl.hit("key", "b", rate, now_ms=T0)).allowed  # another key
    assert (await rl.hit("addr", "a", rate, now_ms=T0)).allowed  # another kind, same id
    # idle for a very long time: back to `burst`, not more
    far = T0 + 10**12
    assert [(await rl.hit("key", "a", rate, now_ms=far)).allowed for _ in range(3)] == \
        [True, True, False]
    # a clock that went backwards (Redis failover) refills nothing and breaks nothing
    assert not (await rl.hit("key", "a", rate, now_ms=far - 5000)).allowed


async def test_a_bucket_expires_when_it_would_be_full(redis) -> None:  # type: ignore[no-untyped-def]
    client, prefix = redis
    rl = RateLimiter(client, prefix)
    await rl.hit("key", "ttl", Rate.per_minute(4), now_ms=T0)  # 1 of 4 used: full in 15 s
    ttl = await client.pttl(rl.key("key", "ttl"))
    assert 0 < ttl <= 15_000
    assert (await rl.hit("key", "ttl", Rate.per_second(0, 5))).allowed  # 0 disables
    assert await client.exists(rl.key("key", "ttl"))  # ... without touching Redis


async def test_real_clock_retry_after_is_enough(redis) -> None:  # type: ignore[no-untyped-def]
    client, prefix = redis
    rl = RateLimiter(client, prefix)
    rate = Rate.per_second(1, 1)
    assert (await rl.hit("key", "rt", rate)).allowed
    refused = await rl.hit("key", "rt", rate)
    if refused.allowed:  # a full second passed between two commands: nothing to check
        return
    assert 0 < refused.retry_after_ms <= 1000 and refused.retry_after_s == 1
    await asyncio.sleep(refused.retry_after_ms / 1000)
    assert (await rl.hit("key", "rt", rate)).allowed


async def test_fails_open_and_logs_once(caplog) -> None:  # type: ignore[no-untyped-def]
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    rl = RateLimiter(dead, "test-dead", skip_s=0)
    with caplog.at_level(logging.WARNING, logger="app.ratelimit"):
        got = [await rl.hit("key", "x", Rate.per_second(1, 1)) for _ in range(5)]
    assert all(d.allowed for d in got) and rl.failures == 5
    assert len([r for r in caplog.records if r.name == "app.ratelimit"]) == 1
    await dead.aclose()


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError):
        Rate(-1, 1000, 1)
    with pytest.raises(ValueError):
        Rate(1, 0, 1)
    with pytest.raises(ValueError):
        Rate(1, 60_000, 10**12)  # too large to count exactly in Lua's doubles
    assert not Rate.per_second(0, 10).enabled and not Rate.per_second(10, 0).enabled


# --- over HTTP -----------------------------------------------------------------------------------

async def _until_limited(send, cap: int = 40) -> tuple[int, httpx.Response, float]:  # type: ignore[no-untyped-def]
    """Send until the first 429: (how many got through, the 429, seconds it took)."""
    started = time.monotonic()
    for n in range(cap):
        r = await send()
        if r.status_code == 429:
            return n, r, time.monotonic() - started
        assert r.status_code < 500, (r.status_code, r.text)
    raise AssertionError(f"no 429 after {cap} requests")


async def test_per_api_key(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(rate_limit_key_per_s=1, rate_limit_key_burst=3)
    async with running_app(settings) as api:
        a, b = await api.api_key("alpha"), await api.api_key("beta", "chat,idle")

        def get(key: str):  # type: ignore[no-untyped-def]
            return lambda: api.client.get("/chat/nope", headers={"Authorization": f"Bearer {key}"})

        through, r, took = await _until_limited(get(a))
        assert 3 <= through <= 3 + math.ceil(took)  # the burst, plus what refilled meanwhile
        assert_429(r, retry_after=1)  # 1/s: the next token is at most a second away
        # another key has a bucket of its own; idle-job calls count on it too
        assert (await get(b)()).status_code == 404
        assert (await api.client.get("/idle-job/nope", headers={
            "Authorization": f"Bearer {b}"})).status_code == 404
        # a bad key is refused before it could use anyone's bucket
        assert (await api.client.get("/chat/nope", headers={
            "Authorization": "Bearer mia_k_nope"})).status_code == 401
        # reset: after Retry-After seconds the key gets through again
        await asyncio.sleep(int(r.headers["retry-after"]))
        assert (await get(a)()).status_code == 404


async def test_per_wallet_address_across_its_tokens(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(rate_limit_address_per_s=1, rate_limit_address_burst=2)
    async with running_app(settings) as api:
        m1, m2 = await api.miner(), await api.miner()
        # a second session token of the same wallet shares its bucket
        message, signature = await m1.signed_message()
        login = await api.client.post("/auth/login", json={"message": message,
                                                            "signature": signature})
        second = {"Authorization": f"Bearer {login.json()['token']}"}
        tokens = [m1.auth, second]
        calls = iter(range(1000))

        def next_job():  # type: ignore[no-untyped-def]
            auth = tokens[next(calls) % 2]
            return api.client.get("/job/next", params={"wait": 0}, headers=auth)

        through, r, took = await _until_limited(next_job)
        assert 2 <= through <= 2 + math.ceil(took)
        assert_429(r, retry_after=1)
        assert (await m2.next_job()) is None  # another wallet: its own bucket
        assert r.headers.get("www-authenticate") is None


async def test_per_ip_sign_in(settings_factory) -> None:  # type: ignore[no-untyped-def]
    with live_server(settings_factory(rate_limit_signin_per_min=3)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            miner = SimMiner(http, Account.create())
            await miner.register()  # nonce + register_miner: 2 of 3
            message, signature = await miner.signed_message()  # nonce: 3 of 3
            r = await http.post("/auth/login", json={"message": message, "signature": signature})
            seconds = assert_429(r)
            assert 15 <= seconds <= 20  # 3/min: the next token is due 20 s after the first
            r = await http.get("/auth/nonce", params={"address": miner.address})
            assert_429(r)
            # other addresses (here: through a trusted proxy's X-Forwarded-For) are not affected
            fwd = {"X-Forwarded-For": "203.0.113.7"}
            r = await http.get("/auth/nonce", params={"address": miner.address}, headers=fwd)
            assert r.status_code == 200
            # signed-in traffic is limited per wallet, not per IP
            assert (await http.get("/job/next", params={"wait": 0},
                                   headers=miner.auth)).status_code == 204


async def test_anonymous_chat_is_a_bucket_per_ip(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(chat_allow_anonymous=True, chat_anon_rate_per_min=2)
    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            codes = [(await http.post("/chat", json={"message": "hi"})).status_code
                     for _ in range(3)]
            assert codes == [202, 202, 429]
            r = await http.post("/chat", json={"message": "hi"})
            assert 25 <= assert_429(r) <= 30
            r = await http.post("/chat", json={"message": "hi"},
                                headers={"X-Forwarded-For": "198.51.100.1"})
            assert r.status_code == 202


async def test_limits_fail_open_when_redis_is_down(settings_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    private = LocalRedis(workdir=tmp_path / "redis").start()
    try:
        settings = settings_factory(redis_url=private.url, rate_limit_key_per_s=1,
                                    rate_limit_key_burst=1)
        async with running_app(settings) as api:
            key = await api.api_key()
            auth = {"Authorization": f"Bearer {key}"}
            assert (await api.client.get("/chat/nope", headers=auth)).status_code == 404
            assert (await api.client.get("/chat/nope", headers=auth)).status_code == 429

            private.stop()
            # no limit, no 503: the read needs only the database
            for _ in range(5):
                assert (await api.client.get("/chat/nope", headers=auth)).status_code == 404
            assert api.ctx.limiter.failures >= 1

            private.start()  # back (empty): limits apply again

            async def limited() -> bool:
                return (await api.client.get("/chat/nope", headers=auth)).status_code == 429
            await until(limited, 15, interval=0.2)
    finally:
        private.stop()


async def test_the_defaults_leave_a_busy_miner_alone(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        miner = await api.miner()
        key = await api.api_key()
        auth = {"Authorization": f"Bearer {key}"}
        # a burst of 300 calls from one wallet, as fast as they go, and 300 from one key
        for _ in range(300):
            assert (await api.client.get("/job/next", params={"wait": 0},
                                         headers=miner.auth)).status_code == 204
        for _ in range(300):
            assert (await api.client.get("/chat/nope", headers=auth)).status_code == 404


def test_openapi_documents_429_with_retry_after_on_every_limited_endpoint() -> None:
    endpoints = all_endpoints(ROUTERS)
    doc = build_openapi(endpoints, title="t", version=__version__)
    limited = 0
    for ep in endpoints:
        path = ep.path.replace(":path}", "}")
        responses = doc["paths"][path][ep.method.lower()]["responses"]
        if ep.auth or ep.limit is not None:
            limited += 1
            assert "429" in responses, (ep.method, ep.path)
            header = responses["429"]["headers"]["Retry-After"]
            assert header["schema"] == {"type": "integer", "minimum": 1}
        else:
            assert "429" not in responses, (ep.method, ep.path)
    per_ip = {(ep.method, ep.path) for ep in endpoints if ep.limit is not None}
    assert per_ip == {("GET", "/auth/nonce"), ("POST", "/auth/login"),
                      ("POST", "/register_miner"),  # sign-in; and the public chain checks:
                      ("GET", "/burns/summary"), ("GET", "/burns/{buyback_id}/verify"),
                      ("GET", "/"), ("GET", "/health"),  # the health checks (issue 23 M4)
                      ("GET", "/metrics")}  # the public scrape (issue 23 M4)
    assert limited > 20


# --- blocks: a process takes several tokens per Redis call ---------------------------------------

def _count_calls(client: Redis) -> list[int]:
    """Counts the commands `client` sends to Redis (every call goes through execute_command)."""
    calls = [0]
    send = client.execute_command

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return await send(*args, **kwargs)
    client.execute_command = counted  # type: ignore[method-assign]
    return calls


async def test_blocks_keep_the_limit_across_processes_with_fewer_redis_calls(redis) -> None:  # type: ignore[no-untyped-def]
    """Two limiters (two API processes) share one bucket of 40 tokens refilled at 1/s. Taking
    blocks of 16, together they let through the 40 and what refilled meanwhile, never more;
    and they ask Redis about once per block, not once per request."""
    client, prefix = redis
    rate = Rate.per_second(1, 40)
    calls = _count_calls(client)
    one = RateLimiter(client, prefix, block_ms=16_000)
    two = RateLimiter(client, prefix, block_ms=16_000)
    assert one.block_size(rate) == 16
    started, allowed, refused_by = time.monotonic(), 0, set()
    for i in range(200):
        limiter = (one, two)[i % 2]
        try:
            await limiter.enforce("key", "shared", rate, "with this key")
            allowed += 1
        except RateLimited as exc:
            refused_by.add(i % 2)
            assert exc.headers["Retry-After"] == "1"
    took = time.monotonic() - started
    assert 40 <= allowed <= 40 + math.ceil(took)  # the burst, plus what refilled meanwhile
    assert refused_by == {0, 1}
    assert calls[0] <= 10 + math.ceil(took) * 2, calls  # blocks of 16, then remembered refusals
    # (plus a SCRIPT LOAD the first time this Redis sees the script)
    assert one.round_trips + two.round_trips in (calls[0], calls[0] - 1)


async def test_concurrent_requests_share_one_block_and_get_the_whole_burst(redis) -> None:  # type: ignore[no-untyped-def]
    """100 requests at once against a burst of 40 (blocks of 16): the 40 are let through, not
    fewer. Each concurrent request taking a block of its own drained the bucket 16 times too
    fast (a 100-submission test got 429s under its limit); they wait for the one in flight."""
    client, prefix = redis
    rate = Rate.per_second(1, 40)
    limiter = RateLimiter(client, prefix, block_ms=16_000)

    async def one() -> bool:
        try:
            await limiter.enforce("key", "together", rate, "with this key")
            return True
        except RateLimited:
            return False

    started = time.monotonic()
    allowed = sum(await asyncio.gather(*(one() for _ in range(100))))
    assert 40 <= allowed <= 40 + math.ceil(time.monotonic() - started)
    assert limiter.round_trips <= 5  # 16 + 16 + 8, then a remembered refusal


async def test_without_blocks_every_request_asks_redis(redis) -> None:  # type: ignore[no-untyped-def]
    """The same load with block_ms=0: the limit is the same, one call per allowed request."""
    client, prefix = redis
    rate = Rate.per_second(1, 40)
    one, two = (RateLimiter(client, prefix) for _ in range(2))
    assert one.block_size(rate) == 1
    allowed = 0
    started = time.monotonic()
    for i in range(80):
        with contextlib.suppress(RateLimited):
            await (one, two)[i % 2].enforce("key", "exact", rate, "with this key")
            allowed += 1
    assert 40 <= allowed <= 40 + math.ceil(time.monotonic() - started)
    assert one.round_trips + two.round_trips >= 40


def test_block_sizes() -> None:
    limiter = RateLimiter(Redis(), "unused", block_ms=100)
    assert limiter.block_size(Rate.per_second(100, 500)) == 10  # 100 ms of 100/s
    assert limiter.block_size(Rate.per_second(200, 400)) == 16  # capped: MAX_BLOCK
    assert limiter.block_size(Rate.per_second(5, 3)) == 1
    assert limiter.block_size(Rate.per_minute(60)) == 1  # the per-IP limits: exact as before
    assert limiter.block_size(Rate.per_second(100, 4)) == 4  # never more than the burst


async def test_api_key_limit_holds_across_two_apps_sharing_redis(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """Two app instances (two API processes) on one database and one Redis: a key's limit is
    enforced over both, and with blocks they make far fewer Redis calls per request."""
    settings = settings_factory(rate_limit_key_per_s=1, rate_limit_key_burst=40,
                                rate_limit_block_ms=16_000)
    async with running_app(settings) as one, running_app(settings) as two:
        key = await one.api_key("shared")
        auth = {"Authorization": f"Bearer {key}"}
        for api in (one, two):  # the key is remembered by both (no reads in the count below)
            await api.client.get("/chat/nope", headers=auth)
        calls = [_count_calls(api.ctx.redis) for api in (one, two)]
        started, codes = time.monotonic(), []
        for i in range(120):
            codes.append((await (one, two)[i % 2].client.get("/chat/nope", headers=auth))
                         .status_code)
        took = time.monotonic() - started
        assert set(codes) == {404, 429}
        assert 38 <= codes.count(404) <= 38 + math.ceil(took)  # 40 less the 2 above, + refill
        redis_calls = calls[0][0] + calls[1][0]
        assert redis_calls <= 12 + 2 * math.ceil(took), redis_calls  # was one per request
