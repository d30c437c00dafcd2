"""Keys and tokens are remembered per process, and a revocation reaches every process at once."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from app.accounts.keys import create_api_key
from app.auth.cache import AuthCache
from app.cli import revoke_api_key
from tests.support.harness import running_app, until


async def test_revocation_reaches_a_process_that_remembers_the_key(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(auth_cache_ttl_s=3600)  # only the announcement can clear it
    async with running_app(settings) as one, running_app(settings) as two:
        async with one.ctx.db.transaction() as session:
            row, key = await create_api_key(session, "acme", "chat")
        assert (await two.chat(key)).status_code == 202  # `two` now remembers the key
        key_id = row.id

        assert await revoke_api_key(settings, key_id, None) == 0  # another process: the CLI

        async def refused() -> bool:
            r = await two.chat(key)
            return r.status_code == 401 and r.json()["error"] == "api_key_revoked"
        await until(refused, timeout=5)
        assert (await one.chat(key)).status_code == 401


async def test_remembered_key_is_not_read_again(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(auth_cache_ttl_s=3600)) as api:
        key = await api.api_key("acme", "chat")
        assert (await api.chat(key)).status_code == 202
        # Deleting every key behind the server's back: a remembered key still works (no
        # read per request), an unknown one is still looked up and refused.
        async with api.ctx.db.transaction() as session:
            await session.execute(text("UPDATE api_keys SET key_hash = 'gone'"))
        assert (await api.chat(key)).status_code == 202
        assert (await api.chat(key + "x")).status_code == 401


async def test_scopes_are_checked_on_every_request_even_when_remembered(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        key = await api.api_key("acme", "chat")
        assert (await api.chat(key)).status_code == 202
        r = await api.client.post("/idle-job", json={"prompt": "p"},
                                  headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


def test_cache_forgets_after_its_ttl_and_never_keeps_with_ttl_zero(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = AuthCache(ttl_s=5)
    cache.put("key", "h", "who")
    now[0] += 4.9
    assert cache.get("key", "h") == "who"
    assert cache.get("token", "h") is None  # a kind of its own
    now[0] += 0.2
    assert cache.get("key", "h") is None
    off = AuthCache(ttl_s=0)
    off.put("key", "h", "who")
    assert off.get("key", "h") is None


async def test_a_key_in_use_is_re_read_in_the_background_never_on_a_request(settings_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A key used across several TTLs is read once on a request (its first use); after that
    the background re-read keeps it remembered, one statement for every due key. A revocation
    that was never announced is still seen within the TTL, through that re-read."""
    from app.auth import apikeys
    from app.auth import cache as auth_cache

    ttl = 2.0
    on_request, in_background = [], []
    single, many = apikeys.authenticate, auth_cache.READERS["key"]

    async def counted_single(session, key_hash):  # type: ignore[no-untyped-def]
        on_request.append(key_hash)
        return await single(session, key_hash)

    async def counted_many(session, key_hashes):  # type: ignore[no-untyped-def]
        in_background.append(list(key_hashes))
        return await many(session, key_hashes)
    monkeypatch.setattr(apikeys, "authenticate", counted_single)
    monkeypatch.setitem(auth_cache.READERS, "key", counted_many)
    async with running_app(settings_factory(auth_cache_ttl_s=ttl)) as api:
        keys = [await api.api_key("acme", "chat"), await api.api_key("other", "chat")]
        started = last = time.monotonic()
        stalls = 0  # a loaded machine may pause us past half a TTL: a read then is fair
        while last - started < 3.5 * ttl:
            for key in keys:
                r = await api.client.get("/chat/nope", headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 404, r.text
            await asyncio.sleep(0.1)
            now = time.monotonic()
            stalls += now - last > ttl / 2
            last = now
        # each key's first use; without the re-read, 2 more every TTL
        assert len(on_request) <= 2 + 2 * stalls, (on_request, stalls)
        assert len(in_background) >= 3  # each a statement for whatever was due then
        # the two keys, used together, fall due together: re-read together, a statement for
        # both (without the gathering wait each re-read took whichever was due first)
        both = sum(len(hashes) == 2 for hashes in in_background)
        assert both >= len(in_background) / 2, in_background

        # revoked behind the server's back: no announcement, only the re-read can tell
        async with api.ctx.db.transaction() as session:
            await session.execute(text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP"))
        reads = len(on_request)

        async def refused() -> bool:
            r = await api.client.get("/chat/nope", headers={"Authorization": f"Bearer {keys[0]}"})
            return r.status_code == 401 and r.json()["error"] == "api_key_revoked"
        await until(refused, timeout=ttl + 1, interval=0.05)  # within the TTL, plus slack
        assert len(on_request) == reads  # the refusal came from the re-read, not a request


def test_a_read_begun_before_a_revocation_is_not_remembered() -> None:
    cache = AuthCache(ttl_s=60)
    cache.put("key", "h", "who")
    generation = cache.generation
    cache.clear()  # a revocation was announced while a request or the re-read was reading
    assert cache.generation != generation and cache.get("key", "h") is None
