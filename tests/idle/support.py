"""Helpers for idle-job tests: clients, miners on /idle-job, operators, an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import func, select

from app.config import Settings
from app.models import IdleJob, RevenueEvent
from app.runpod.standin import StandinServer
from tests.support.harness import Harness, SimMiner
from tests.support.services import delete_keys

PRICE = Decimal("0.002")


def runpod_settings(standin: StandinServer, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        runpod_base_url=standin.base_url, runpod_api_key=standin.api_key,
        runpod_endpoint_id=standin.endpoint_id, idle_to_runpod_after_s=0.2,
        runpod_timeout_s=5.0, runpod_retry_base_s=0.1, runpod_hold_s=2.0, runpod_max_tries=3)
    values.update(overrides)
    return values


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(api: Harness, key: str, prompt: str = "hello idle world",
                 max_tokens: int = 64, **extra: Any) -> dict[str, Any]:
    r = await api.client.post("/idle-job", json={"prompt": prompt, "max_tokens": max_tokens,
                                                 **extra}, headers=auth(key))
    assert r.status_code == 202, r.text
    return r.json()


async def get_job(api: Harness, key: str, job_id: str, wait: float = 0) -> dict[str, Any]:
    r = await api.client.get(f"/idle-job/{job_id}", params={"wait": wait}, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


async def next_idle(m: SimMiner, wait: float = 0) -> dict[str, Any] | None:
    r = await m.client.get("/idle-job/next", params={"wait": wait}, headers=m.auth)
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    return r.json()


async def post_idle_result(m: SimMiner, job: dict[str, Any], output: str,
                           tokens: int | None = None, signature: str | None = None,
                           **extra: Any) -> httpx.Response:
    body = {"job_id": job["job_id"], "lease_id": job["lease_id"], "output": output,
            "output_tokens": tokens, "signature": signature or m.sign_result(job["job_id"], output),
            **extra}
    return await m.client.post("/idle-job/result", json=body, headers=m.auth)


async def operator_token(client: httpx.AsyncClient, account: Any) -> str:
    r = await client.get("/auth/nonce", params={"address": account.address})
    message = r.json()["message"]
    sig = "0x" + account.sign_message(encode_defunct(text=message)).signature.hex().removeprefix("0x")
    r = await client.post("/auth/login", json={"message": message, "signature": sig})
    assert r.status_code == 200, r.text
    assert "operator" in r.json()["roles"]
    return r.json()["token"]


def new_operator() -> Any:
    return Account.create()


async def ledger(api: Harness) -> tuple[Decimal, int, dict[str, int]]:
    """(sum of RevenueEvent.amount_usd in Python Decimal, events, idle jobs by status)."""
    async with api.ctx.db.sessions() as s:
        amounts = (await s.execute(select(RevenueEvent.amount_usd))).scalars().all()
        statuses = dict((await s.execute(
            select(IdleJob.status, func.count()).group_by(IdleJob.status))).all())
    return sum((Decimal(a) for a in amounts), Decimal(0)), len(amounts), statuses


async def events_for(api: Harness, job_id: str) -> list[RevenueEvent]:
    async with api.ctx.db.sessions() as s:
        return list((await s.execute(select(RevenueEvent).where(
            RevenueEvent.idle_job_id == int(job_id)))).scalars().all())


def clear_arq_keys(settings: Settings) -> None:
    """arq's own keys (arq:job:, arq:retry:, ...) are global; ours carry the test's prefix."""
    delete_keys(settings.redis_url, f"arq:*{settings.redis_prefix}*")


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Any]:
    """The arq worker in this event loop (no signal handlers), stopped and cleaned up after."""
    from jobs.worker import create_worker

    worker = create_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        clear_arq_keys(settings)
