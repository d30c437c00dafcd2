"""The app served twice over one database and Redis, as two API processes would be: in-process
(for keys and simulated miners) and on a real socket (for the openai SDK, which must stream)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
from eth_account.messages import encode_defunct

from app.auth.wallet import result_digest
from app.config import Settings
from tests.support.harness import Harness, SimMiner, running_app
from tests.support.live import live_server_beside

MODEL = "mia-test-7b"


@dataclass
class V1:
    api: Harness  # the in-process app: keys, miners, the database
    url: str  # the same app on 127.0.0.1
    key: str  # a business API key

    def sdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key or self.key,
                                  max_retries=0, timeout=60)

    async def miner(self, model: str | None = MODEL, capabilities: str | None = None) -> Miner:
        m = await self.api.miner()
        miner = Miner(m, model, capabilities)
        if model is not None:
            await miner.poll(0)  # declares the model
        return miner


@dataclass
class Miner:
    sim: SimMiner
    model: str | None
    capabilities: str | None = None  # e.g. "tools,json_schema"

    async def poll(self, wait: float = 5) -> dict[str, Any] | None:
        params: dict[str, Any] = {"wait": wait}
        if self.model is not None:
            params["model"] = self.model
        if self.capabilities is not None:
            params["capabilities"] = self.capabilities
        r = await self.sim.client.get("/job/next", params=params, headers=self.sim.auth)
        if r.status_code == 204:
            return None
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    async def chunk(self, job: dict[str, Any], seq: int, delta: str) -> Any:
        return await self.sim.client.post(f"/job/{job['job_id']}/chunk", headers=self.sim.auth,
                                          json={"lease_id": job["lease_id"], "seq": seq,
                                                "delta": delta})

    async def finish(self, job: dict[str, Any], output: str,
                     finish_reason: str | None = None) -> None:
        r = await self.result(job, output, finish_reason)
        assert r.status_code == 200, r.text

    async def result(self, job: dict[str, Any], output: str, finish_reason: str | None = None,
                     signed_reason: str | None = None) -> Any:
        """Post a result with the model server's finish reason, signed over it (or over
        `signed_reason`, to forge one); without a reason, as miners before finish reasons."""
        if finish_reason is None:
            return await self.sim.post_result(job, output)
        digest = result_digest(job["job_id"], output, signed_reason or finish_reason)
        sig = self.sim.account.sign_message(encode_defunct(primitive=digest)).signature.hex()
        return await self.sim.client.post("/job/result", headers=self.sim.auth, json={
            "job_id": job["job_id"], "lease_id": job["lease_id"], "output": output,
            "finish_reason": finish_reason, "signature": "0x" + sig.removeprefix("0x")})


@contextlib.asynccontextmanager
async def v1_app(settings: Settings) -> AsyncIterator[V1]:
    async with running_app(settings) as api:
        key = await api.api_key("openai-co")
        async with live_server_beside(settings) as url:
            yield V1(api, url, key)
