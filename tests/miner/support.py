"""Helpers for the miner tests: real servers on 127.0.0.1 (uvicorn in a thread), no mocks."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import uvicorn

from miner.demo_model import DemoState

TEST_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread; stop() and start()
    again on the same port to simulate a restart (pass `factory` to get a fresh app each time)."""

    def __init__(self, app=None, port: int | None = None, factory=None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._factory = factory or (lambda: app)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "UvicornThread":
        self._server = uvicorn.Server(
            uvicorn.Config(self._factory(), host="127.0.0.1", port=self.port, log_level="warning",
                           access_log=False, lifespan="on", timeout_graceful_shutdown=1)
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
            self._server = self._thread = None

    def __enter__(self) -> "UvicornThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class DemoModel:
    url: str  # ends with /v1
    root: str
    state: DemoState

    server: UvicornThread | None = None

    def control(self, **switches: object) -> dict:
        r = httpx.post(self.root + "/demo/control", json=switches, timeout=5)
        r.raise_for_status()
        return r.json()




def new_key() -> str:
    from eth_account import Account

    return "0x" + bytes(Account.create().key).hex()


class RequestCounter:
    """ASGI middleware counting HTTP requests by "METHOD /path", for tests that check which
    endpoints a miner used."""

    def __init__(self, app, counts: Counter[str]) -> None:  # type: ignore[no-untyped-def]
        self.app, self.counts = app, counts

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            self.counts[f"{scope['method']} {scope['path']}"] += 1
        await self.app(scope, receive, send)


class HeldReplies:
    """ASGI middleware holding back the answers to requests whose path ends with one of
    `suffixes` until `gate` is set: the backend has done the work (a lease committed), the
    client has not heard of it yet, as over a slow network."""

    def __init__(self, app, suffixes: tuple[str, ...], gate: threading.Event) -> None:  # type: ignore[no-untyped-def]
        self.app, self.suffixes, self.gate = app, suffixes, gate

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http" or not scope["path"].endswith(self.suffixes):
            await self.app(scope, receive, send)
            return

        async def held(message) -> None:  # type: ignore[no-untyped-def]
            while message["type"] == "http.response.start" and not self.gate.is_set():
                await asyncio.sleep(0.01)
            await send(message)

        await self.app(scope, receive, held)


@dataclass
class Backend:
    """The real MIA backend (app.main.create_app) served by uvicorn on 127.0.0.1."""

    settings: object
    server: UvicornThread
    requests: Counter[str] = field(default_factory=Counter)  # "GET /job/batch" -> count

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def db_path(self) -> str:
        return str(self.settings.database_url).split(":///", 1)[1]

    def query(self, sql: str, *args: object) -> list[tuple]:
        import sqlite3

        con = sqlite3.connect(self.db_path, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    async def api_key(self, business: str = "acme", scopes: str = "chat") -> str:
        """A key of `business`; one that may submit idle jobs gets its business a balance to
        pay for them (FUNDS USD, a ledger credit)."""
        from app.accounts import ledger
        from app.accounts.keys import create_api_key
        from app.db import Database
        from tests.support.harness import FUNDS

        db = Database(self.settings.database_url)
        try:
            async with db.transaction() as session:
                stored, key = await create_api_key(session, business, scopes)
                if "idle" in stored.scope_set:
                    await ledger.credit(session, stored.business_id, FUNDS,
                                        reference=f"test-{key[:10]}", actor="test")
        finally:
            await db.dispose()
        return key

    async def chat(self, key: str, message: str, **extra: object) -> dict:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            r = await c.post("/chat", json={"message": message, **extra},
                             headers={"Authorization": f"Bearer {key}"})
        assert r.status_code in (200, 202), r.text
        return r.json()

    async def answer(self, key: str, job_id: str, timeout: float = 30) -> dict:
        """Wait (long-polling GET /chat/{id}) until the job is completed or failed."""
        import asyncio

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=90) as c:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"job {job_id} not answered within {timeout}s")
                try:
                    r = await c.get(f"/chat/{job_id}", params={"wait": min(20, max(1, int(left)))},
                                    headers={"Authorization": f"Bearer {key}"})
                except httpx.HTTPError:  # backend restarting in the test
                    await asyncio.sleep(0.2)
                    continue
                if r.status_code == 200 and r.json()["status"] in ("completed", "failed"):
                    return r.json()
                await asyncio.sleep(0.05)

    def job(self, job_id: str) -> dict:
        rows = self.query(
            "SELECT c.status, c.attempts, c.response, c.output_tokens, c.signature, m.address, "
            "c.finish_reason FROM chat_jobs c LEFT JOIN miners m ON m.id = c.miner_id "
            "WHERE c.id = ?", job_id)
        status, attempts, response, tokens, signature, address, finish = rows[0]
        answers = self.query(
            "SELECT COUNT(*) FROM chat_logs WHERE job_id = ? AND role = 'assistant'", job_id)[0][0]
        return dict(status=status, attempts=attempts, response=response, output_tokens=tokens,
                    signature=signature, miner=address, answers=answers, finish_reason=finish)


class RunningMiner:
    """A miner (miner.runner.Miner) running in the test's event loop against real servers."""

    def __init__(self, backend_url: str, model_url: str, key: str | None = None, **cfg: object) -> None:
        from miner.client import BackendClient
        from miner.config import MinerConfig
        from miner.model import ModelClient
        from miner.runner import Miner
        from miner.wallet import Wallet

        values: dict[str, object] = dict(poll_wait=1, drain_timeout=30, backoff_cap=2.0)
        values.update(cfg)
        self.cfg = MinerConfig(backend_url=backend_url, private_key=key or new_key(),
                               model_url=model_url, **values)  # type: ignore[arg-type]
        self.wallet = Wallet.from_private_key(self.cfg.private_key or "")
        self.backend = BackendClient(backend_url, self.wallet, name=self.cfg.name)
        self.model = ModelClient(model_url, self.cfg.model, timeout=self.cfg.model_timeout,
                                 temperature=self.cfg.temperature)
        self.miner = Miner(self.cfg, self.backend, self.model)
        self.task = None
        self.rc: int | None = None

    @property
    def address(self) -> str:
        return self.wallet.address

    async def __aenter__(self) -> "RunningMiner":
        import asyncio

        self.task = asyncio.create_task(self.miner.run())
        return self

    async def stop(self, timeout: float = 60) -> int:
        import asyncio

        if self.rc is None and self.task is not None:
            self.miner.request_stop()
            self.rc = await asyncio.wait_for(self.task, timeout)
            await self.backend.aclose()
            await self.model.aclose()
        return self.rc  # type: ignore[return-value]

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class MinerProcess:
    """`python -m miner` as a real subprocess; its log goes to a file the test can read."""

    def __init__(self, log_path, backend_url: str, model_url: str, key: str, *args: str) -> None:
        import os
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("MIA_")}
        env.update(MIA_MINER_PRIVATE_KEY=key, PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "miner", "--backend", backend_url, "--model-url", model_url,
             "--poll-wait", "2", "--backoff-cap", "2", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    def log(self) -> str:
        with open(self.log_path) as fh:
            return fh.read()

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} not logged; log:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._log.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
