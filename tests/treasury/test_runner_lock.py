"""The worker's Redis runner lock: losing it stops the run (two runners could sign the same
remaining chunk with two nonces)."""

from __future__ import annotations

import asyncio

import pytest
from arq import Retry

from jobs import treasury_tasks
from tests.treasury.conftest import TApp


async def test_a_run_that_loses_the_lock_is_stopped(tapp: TApp, monkeypatch) -> None:
    monkeypatch.setattr(treasury_tasks, "LOCK_TTL_S", 0.6)  # renewal every 0.2 s
    app = tapp.ctx
    key = f"{app.settings.redis_prefix}:treasury:runner"
    finished = False
    with pytest.raises(treasury_tasks.RunnerLockLost):
        async with treasury_tasks.runner_lock(app) as held:
            assert held
            await app.redis.set(key, "another-runner")  # it expired and someone else took it
            await asyncio.sleep(2)
            finished = True
    assert not finished
    assert await app.redis.get(key) == b"another-runner"  # not ours to delete
    await app.redis.delete(key)

    # renewal keeps a healthy lock; the body finishes and the lock is released
    async with treasury_tasks.runner_lock(app) as held:
        assert held
        await asyncio.sleep(1.0)
        assert (await app.redis.pttl(key)) > 0
    assert await app.redis.get(key) is None


async def test_the_task_defers_when_its_lock_is_lost(tapp: TApp, monkeypatch) -> None:
    monkeypatch.setattr(treasury_tasks, "LOCK_TTL_S", 0.6)
    app = tapp.ctx
    key = f"{app.settings.redis_prefix}:treasury:runner"

    async def slow_run(ctx, app_, buyback_id):  # type: ignore[no-untyped-def]
        await app.redis.set(key, "another-runner")
        await asyncio.sleep(2)
        return "burned"

    monkeypatch.setattr(treasury_tasks, "_run", slow_run)
    with pytest.raises(Retry):
        await treasury_tasks.run_buyback({"app": app, "job_try": 1}, 1)
    await app.redis.delete(key)
