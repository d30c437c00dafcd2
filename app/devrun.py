"""`mia dev`: the whole network on one machine, on embedded defaults.

Starts what is missing (a private redis-server unless REDIS_URL is set), migrates the SQLite
database, makes a demo API key, then runs the API and a demo miner (with a deterministic demo
model, not an LLM) as child processes until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from eth_account import Account
from eth_utils import keccak

from app.config import Settings
from app.localredis import LocalRedis, free_port

DEV_DIR = Path(".dev")
# Dev-only wallet for the demo miner, derived from a public phrase: never hold real funds with it.
DEMO_MINER_KEY = "0x" + keccak(b"mia dev demo miner (public, dev only)").hex()


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, base_env: dict[str, str]) -> None:
        with open(DEV_DIR / f"{self.name}.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(self.argv, env={**base_env, **self.env}, stdout=log,
                                         stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_http(url: str, timeout: float = 30.0, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.proc is not None and child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited early; see {DEV_DIR / (child.name + '.log')}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def run_dev() -> int:
    DEV_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    redis_server = None
    if "REDIS_URL" not in env:
        redis_server = LocalRedis(workdir=DEV_DIR / "redis").start()
        env["REDIS_URL"] = redis_server.url
    settings = Settings(redis_url=env["REDIS_URL"])
    env.setdefault("DATABASE_URL", settings.database_url)
    env.setdefault("PORT", str(settings.port))
    api_url = f"http://127.0.0.1:{env['PORT']}"
    env.setdefault("PUBLIC_URL", api_url)

    from app.auth.apikeys import issue_api_key
    from app.migrate import upgrade

    upgrade(env["DATABASE_URL"])
    api_key = asyncio.run(issue_api_key(env["DATABASE_URL"], "demo", "chat,idle"))
    model_port = free_port()
    py = sys.executable
    children = [
        Child("api", [py, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", env["PORT"]]),
        Child("demo-model", [py, "-m", "miner.demo_model", "--port", str(model_port)]),
        Child("demo-miner", [py, "-m", "miner", "--backend", api_url, "--name", "demo-miner",
                             "--model-url", f"http://127.0.0.1:{model_port}", "--concurrency", "4"],
              env={"MIA_MINER_PRIVATE_KEY": DEMO_MINER_KEY}),
    ]
    try:
        for child in children:
            child.start(env)
            if child.name == "api":
                wait_http(f"{api_url}/health", child=child)
            elif child.name == "demo-model":
                wait_http(f"http://127.0.0.1:{model_port}/v1/models", child=child)
        print_summary(env, api_url, model_port, api_key, redis_server is not None)
        while all(c.proc is not None and c.proc.poll() is None for c in children):
            time.sleep(0.5)
        dead = [c.name for c in children if c.proc is not None and c.proc.poll() is not None]
        print(f"stopped: {', '.join(dead)} exited; logs are in {DEV_DIR}/", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        if redis_server is not None:
            redis_server.stop()


def print_summary(env: dict[str, str], api_url: str, model_port: int, api_key: str,
                  own_redis: bool) -> None:
    miner = Account.from_key(DEMO_MINER_KEY).address
    redis_note = " (private, started by mia dev)" if own_redis else ""
    print(f"""
MIA is running locally. Ctrl-C stops everything; logs are in {DEV_DIR}/.
  API:         {api_url}
  API docs:    {api_url}/docs   (ReDoc: {api_url}/redoc)
  Health:      {api_url}/health
  Database:    {env['DATABASE_URL']}
  Redis:       {env['REDIS_URL']}{redis_note}
  Demo miner:  {miner}, answering with the DEMO model at http://127.0.0.1:{model_port} (not an LLM)

Ask something (the demo miner answers within seconds):
  curl -s -X POST '{api_url}/chat?wait=10' -H "Authorization: Bearer {api_key}" \\
       -H 'Content-Type: application/json' -d '{{"message": "What are your opening hours?"}}'

API key: {api_key}
""", flush=True)
