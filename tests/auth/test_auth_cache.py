"""Keys and tokens are remembered per process, and a revocation reaches every process at once."""

from __future__ import annotations

import time

from sqlalchemy import text

from app.auth.apikeys import create_api_key
from app.ttlcache import TTLCache as AuthCache
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
    cache.put("h", "who")
    now[0] += 4.9
    assert cache.get("h") == "who"
    now[0] += 0.2
    assert cache.get("h") is None
    off = AuthCache(ttl_s=0)
    off.put("h", "who")
    assert off.get("h") is None
