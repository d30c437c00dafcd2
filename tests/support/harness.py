"""An app running in-process (lifespan included) with an httpx client, plus actors that use it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from app.accounts import ledger
from app.accounts.keys import create_api_key
from app.auth.wallet import result_digest
from app.config import Settings
from app.context import AppContext
from app.main import create_app


FUNDS = Decimal("1000")  # what an idle key's business starts with in tests (USD)


@dataclass
class Harness:
    settings: Settings
    client: httpx.AsyncClient
    ctx: AppContext
    app: Any = None  # the Starlette app (its state), for tests that look inside

    async def api_key(self, business: str = "acme", scopes: str = "chat",
                      funds: Decimal | None = None) -> str:
        """A new key of `business`. A key that may submit priced jobs (the `idle` scope) gets
        its business FUNDS USD of balance unless `funds` says otherwise (0: none)."""
        async with self.ctx.db.transaction() as session:
            stored, key = await create_api_key(session, business, scopes)
        if funds is None:
            funds = FUNDS if "idle" in stored.scope_set else Decimal(0)
        if funds:
            await self.fund(stored.business_id, funds)
        return key

    async def fund(self, business_id: int, amount: Decimal) -> None:
        """Top the business up by `amount` USD (a ledger credit, as an operator's would be)."""
        async with self.ctx.db.transaction() as session:
            await ledger.credit(session, business_id, amount, reference=f"test-{uuid.uuid4()}",
                                actor="test")

    async def chat(self, key: str | None, message: str = "hello", **extra: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        params = {"wait": extra.pop("wait")} if "wait" in extra else {}
        return await self.client.post("/chat", json={"message": message, **extra},
                                      headers=headers, params=params)

    async def miner(self, name: str | None = None) -> SimMiner:
        m = SimMiner(self.client, Account.create(), name)
        await m.register()
        return m


@dataclass
class SimMiner:
    client: httpx.AsyncClient
    account: LocalAccount
    name: str | None = None
    token: str | None = None
    seen: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.account.address

    async def signed_message(self) -> tuple[str, str]:
        r = await self.client.get("/auth/nonce", params={"address": self.address})
        r.raise_for_status()
        message = r.json()["message"]
        sig = self.account.sign_message(encode_defunct(text=message)).signature.hex()
        return message, "0x" + sig.removeprefix("0x")

    async def register(self) -> dict[str, Any]:
        message, signature = await self.signed_message()
        body: dict[str, Any] = {"message": message, "signature": signature}
        if self.name:
            body["name"] = self.name
        r = await self.client.post("/register_miner", json=body)
        r.raise_for_status()
        self.token = r.json()["token"]
        return r.json()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def next_job(self, wait: float = 0) -> dict[str, Any] | None:
        r = await self.client.get("/job/next", params={"wait": wait}, headers=self.auth)
        if r.status_code == 204:
            return None
        r.raise_for_status()
        self.seen.append(r.json()["job_id"])
        return r.json()

    def sign_result(self, job_id: str, output: str) -> str:
        sig = self.account.sign_message(encode_defunct(primitive=result_digest(job_id, output)))
        return "0x" + sig.signature.hex().removeprefix("0x")

    async def post_result(self, job: dict[str, Any], output: str, tokens: int | None = None,
                          signature: str | None = None) -> httpx.Response:
        body = {"job_id": job["job_id"], "lease_id": job["lease_id"], "output": output,
                "output_tokens": tokens if tokens is not None else len(output.split()),
                "signature": signature or self.sign_result(job["job_id"], output)}
        return await self.client.post("/job/result", json=body, headers=self.auth)


async def until(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> None:
    """Wait until `await predicate()` is true, failing the test after `timeout` seconds."""
    async def loop() -> None:
        while not await predicate():
            await asyncio.sleep(interval)
    await asyncio.wait_for(loop(), timeout)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=settings.base_url,
                                     timeout=90) as client:
            yield Harness(settings, client, app.state.ctx, app)
