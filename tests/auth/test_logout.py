"""POST /auth/logout revokes the caller's token in every API process; the worker's cron deletes
expired tokens (jobs/auth_tasks.py)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from app.models import AuthToken, utcnow
from jobs.auth_tasks import prune_expired_tokens
from tests.support.harness import running_app, until


async def test_logout_revokes_the_token_in_every_process(any_db, settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(any_db, auth_cache_ttl_s=3600)  # only the announcement clears
    async with running_app(settings) as one, running_app(settings) as two:
        miner = await one.miner()
        other = await one.miner()
        for api in (one, two):  # both processes remember the token
            r = await api.client.get("/job/next", params={"wait": 0}, headers=miner.auth)
            assert r.status_code == 204
        r = await one.client.post("/auth/logout", headers=miner.auth)
        assert r.status_code == 200 and r.json() == {"revoked": True}

        async def refused() -> bool:
            r = await two.client.get("/job/next", params={"wait": 0}, headers=miner.auth)
            return r.status_code == 401 and r.json()["error"] == "token_revoked"
        await until(refused, timeout=5)
        r = await one.client.post("/auth/logout", headers=miner.auth)  # once is enough
        assert r.status_code == 401 and r.json()["error"] == "token_revoked"
        # Only that token: the wallet signs in again, other wallets never noticed.
        assert (await other.next_job()) is None
        await miner.register()
        assert (await miner.next_job()) is None


async def test_logout_needs_a_session_token(api) -> None:  # type: ignore[no-untyped-def]
    key = await api.api_key()
    for headers in ({}, {"Authorization": f"Bearer {key}"}):
        r = await api.client.post("/auth/logout", headers=headers)
        assert r.status_code == 401, r.text


async def test_prune_deletes_only_expired_tokens(any_db, settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        live, old, gone = await api.miner(), await api.miner(), await api.miner()
        async with api.ctx.db.transaction() as s:
            for m, age in ((old, timedelta(seconds=1)), (gone, timedelta(days=30))):
                await s.execute(update(AuthToken).where(AuthToken.address == m.address)
                                .values(expires_at=utcnow() - age))
        assert await prune_expired_tokens({"app": api.ctx}) == 2
        assert await prune_expired_tokens({"app": api.ctx}) == 0
        async with api.ctx.db.sessions() as s:
            left = (await s.execute(select(AuthToken.address))).scalars().all()
            assert left == [live.address]
            assert (await s.execute(select(func.count()).select_from(AuthToken))).scalar() == 1
        assert (await live.next_job()) is None
