"""`mia dev`: the whole network on one machine, on embedded defaults.

Starts what is missing (a private redis-server unless REDIS_URL is set), a local chain
(eth-tester behind JSON-RPC) with $SERV, a stablecoin and Uniswap V2 deployed, the local RunPod
stand-in, the API, the worker, and a demo miner whose model is a deterministic demo (not an
LLM). Revenue from idle jobs crosses a low dev threshold, the worker buys $SERV and burns it,
and the burn shows in /burns. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
from eth_account import Account
from eth_utils import keccak

from app.accounts.demo import DEMO_BUSINESS
from app.config import Settings
from app.localredis import LocalRedis, free_port

DEV_DIR = Path(".dev")
# Dev-only wallet for the demo miner, derived from a public phrase: never hold real funds with it.
DEMO_MINER_KEY = "0x" + keccak(b"mia dev demo miner (public, dev only)").hex()
RUNPOD_DEV_KEY = "dev-standin-key"  # the local stand-in's key, not a RunPod key
# Dev economics: a visible loop within a minute. Production defaults are in .env.example.
DEMO_MODEL_NAME = "mia-demo"  # what the demo miner declares: /v1/models lists it
DEV_DEFAULTS = {"PRICE_PER_1K_TOKENS_USD": "1.00", "BUYBACK_THRESHOLD_USD": "0.10",
                "BUYBACK_CHECK_INTERVAL_S": "5", "BUYBACK_CHUNK_INTERVAL_S": "5",
                "IDLE_TO_RUNPOD_AFTER_S": "20", "CONFIRMATIONS": "1", "TWAP_WINDOW_S": "5",
                "DEPOSIT_SCAN_INTERVAL_S": "2"}


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, base_env: dict[str, str]) -> None:
        with open(DEV_DIR / f"{self.name}.log", "ab") as log:  # the child keeps its own copy
            # Own session: Ctrl-C reaches `mia dev` only, which then stops each child once, in
            # order (a miner that got SIGINT and then SIGTERM would give its jobs back).
            self.proc = subprocess.Popen(self.argv, env={**base_env, **self.env}, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_http(url: str, child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.running():
            raise RuntimeError(f"{child.name} exited early; see {DEV_DIR / (child.name + '.log')}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def wait_rpc(url: str, child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    while time.monotonic() < deadline:
        if not child.running():
            raise RuntimeError(f"{child.name} exited early; see {DEV_DIR / (child.name + '.log')}")
        try:
            if httpx.post(url, json=body, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the local chain at {url} did not come up within {timeout:.0f} s")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the children as Ctrl-C does, instead of orphaning them


def run_dev() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    DEV_DIR.mkdir(exist_ok=True)
    logging.getLogger("chain").setLevel(logging.WARNING)  # the deploy's own lines go to its log
    env = dict(os.environ)
    for name, value in DEV_DEFAULTS.items():
        env.setdefault(name, value)
    redis_server = None
    if "REDIS_URL" not in env:
        redis_server = LocalRedis(workdir=DEV_DIR / "redis").start()
        env["REDIS_URL"] = redis_server.url
    settings = Settings(redis_url=env["REDIS_URL"])
    if "DATABASE_URL" not in env:
        # The local chain is new every run, so the records of its burns start afresh too.
        db = DEV_DIR / "mia.db"
        for leftover in (db, db.with_name("mia.db-wal"), db.with_name("mia.db-shm")):
            leftover.unlink(missing_ok=True)
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{db}"
    env.setdefault("PORT", str(settings.port))
    api_url = f"http://127.0.0.1:{env['PORT']}"
    env.setdefault("PUBLIC_URL", api_url)
    # The demo miner is the operator's own: trusted, so a fresh network answers at once instead
    # of waiting for a second wallet to agree with a new one (README: Why you can trust ...).
    env.setdefault("TRUSTED_MINERS", Account.from_key(DEMO_MINER_KEY).address)
    py = sys.executable
    chain_port, runpod_port, model_port = free_port(), free_port(), free_port()
    rpc_url = f"http://127.0.0.1:{chain_port}"
    runpod_url = f"http://127.0.0.1:{runpod_port}"
    env.update(RUNPOD_BASE_URL=runpod_url, RUNPOD_API_KEY=RUNPOD_DEV_KEY,
               RUNPOD_ENDPOINT_ID="standin-endpoint")

    chain = Child("chain", [py, "-m", "chain.node", "--port", str(chain_port), "--block-time", "1"])
    runpod = Child("runpod-standin", [py, "-m", "app.runpod.standin", "--port", str(runpod_port),
                                      "--api-key", RUNPOD_DEV_KEY])
    api = Child("api", [py, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", env["PORT"]])
    worker = Child("worker", [py, "-m", "app.cli", "worker"])
    model = Child("demo-model", [py, "-m", "miner.demo_model", "--port", str(model_port),
                                 "--model", DEMO_MODEL_NAME, "--word-delay", "0.03"])  # streams visibly
    miner = Child("demo-miner", [py, "-m", "miner", "--backend", api_url, "--name", "demo-miner",
                                 "--model-url", f"http://127.0.0.1:{model_port}",
                                 "--concurrency", "4", "--accept-idle",
                                 # an idle miner stops within its long-poll: Ctrl-C is quick
                                 "--poll-wait", "2"],
                  env={"MIA_MINER_PRIVATE_KEY": DEMO_MINER_KEY})
    children = [chain, runpod, api, worker, model, miner]
    try:
        chain.start(env)
        wait_rpc(rpc_url, chain)
        env.update(deploy_devnet(rpc_url))
        # deposits are watched from after the deploy (its funding of the treasury is no deposit)
        env.setdefault("DEPOSIT_START_BLOCK", str(chain_head(rpc_url) + 1))
        from app.accounts.demo import DEMO_BUSINESS, seed_demo_business
        from app.migrate import upgrade

        upgrade(env["DATABASE_URL"])
        api_key, balance = asyncio.run(seed_demo_business(env["DATABASE_URL"]))
        deposit_ref = asyncio.run(demo_deposit_ref(env["DATABASE_URL"], DEMO_BUSINESS))
        runpod.start(env)
        wait_http(f"{runpod_url}/v2/standin-endpoint/health", runpod)
        api.start(env)
        wait_http(f"{api_url}/health", api)
        worker.start(env)
        model.start(env)
        wait_http(f"http://127.0.0.1:{model_port}/v1/models", model)
        miner.start(env)
        print_summary(env, api_url, rpc_url, runpod_url, model_port, api_key, balance,
                      redis_server is not None, deposit_ref)
        while all(c.running() for c in children):
            time.sleep(0.5)
        dead = [c.name for c in children if not c.running()]
        print(f"stopped: {', '.join(dead)} exited; logs are in {DEV_DIR}/", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except RuntimeError as exc:
        print(f"mia dev: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(children):
            child.stop()
        if redis_server is not None:
            redis_server.stop()


def deploy_devnet(rpc_url: str) -> dict[str, str]:
    """Deploys the contracts to the fresh local chain; returns the env the API and worker need."""
    from chain.devnet import main as devnet_main

    out = DEV_DIR / "devnet.json"
    with open(DEV_DIR / "devnet.log", "a") as log:
        stdout = sys.stdout
        sys.stdout = log  # the addresses are in devnet.json and in the summary
        try:
            code = devnet_main(["--rpc-url", rpc_url, "--out", str(out)])
        finally:
            sys.stdout = stdout
    if code != 0:
        raise RuntimeError(f"deploying the local contracts failed; see {DEV_DIR / 'devnet.log'}")
    d = json.loads(out.read_text())
    d["rpc_url"] = rpc_url  # for `mia deposit` from another shell
    out.write_text(json.dumps(d, indent=2) + "\n")
    return {"CHAIN_RPC_URL": rpc_url, "CHAIN_ID": str(d["chain_id"]),
            "SERV_TOKEN_ADDRESS": d["serv_token"], "QUOTE_TOKEN_ADDRESS": d["quote_token"],
            "DEX_ROUTER_ADDRESS": d["router"], "BURN_ADDRESS": d["burn_address"],
            "TREASURY_ADDRESS": d["treasury"], "TREASURY_PRIVATE_KEY": d["treasury_key"]}


def chain_head(rpc_url: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    return int(httpx.post(rpc_url, json=body, timeout=5.0).json()["result"], 16)


async def demo_deposit_ref(database_url: str, business: str) -> str:
    """The demo business's deposit reference (given one if it has none)."""
    from sqlalchemy import select

    from app.accounts.deposits import ensure_deposit_ref
    from app.db import Database
    from app.models import Business

    db = Database(database_url)
    try:
        async with db.transaction() as session:
            business_id = (await session.execute(select(Business.id).where(
                Business.name == business))).scalar_one()
            return await ensure_deposit_ref(session, business_id)
    finally:
        await db.dispose()


def print_summary(env: dict[str, str], api_url: str, rpc_url: str, runpod_url: str,
                  model_port: int, api_key: str, balance: Decimal, own_redis: bool,
                  deposit_ref: str) -> None:
    miner = Account.from_key(DEMO_MINER_KEY).address
    redis_note = " (private, started by mia dev)" if own_redis else ""
    print(f"""
MIA is running locally. Ctrl-C stops everything; logs are in {DEV_DIR}/.
  API:          {api_url}
  API docs:     {api_url}/docs   (ReDoc: {api_url}/redoc)
  Health:       {api_url}/health      Metrics: {api_url}/metrics
  Burns:        {api_url}/burns       (public; verify one at /burns/<id>/verify)
  Transparency: {api_url}/transparency   (the public page; verify a burn in one click)
  Database:     {env['DATABASE_URL']}
  Redis:        {env['REDIS_URL']}{redis_note}
  Local chain:  {rpc_url} (eth-tester, chain id {env['CHAIN_ID']}); $SERV {env['SERV_TOKEN_ADDRESS']}
  RunPod:       {runpod_url} (a LOCAL STAND-IN for RunPod serverless)
  Demo miner:   {miner}, answering with the DEMO model on port {model_port} (not an LLM)
  Dev economics: {env['PRICE_PER_1K_TOKENS_USD']} USD per 1k tokens, buyback at {env['BUYBACK_THRESHOLD_USD']} USD
  Demo business: {DEMO_BUSINESS!r}, balance {balance} USD (an operator credit, reference 'dev-seed')

Ask something (the demo miner answers within seconds):
  curl -s -X POST '{api_url}/chat?wait=10' -H "Authorization: Bearer {api_key}" \\
       -H 'Content-Type: application/json' -d '{{"message": "What are your opening hours?"}}'

The same through the OpenAI-compatible API, streamed as the miner writes it (curl -N, or the
openai package, which .venv has):
  curl -N '{api_url}/v1/chat/completions' -H "Authorization: Bearer {api_key}" \\
       -H 'Content-Type: application/json' \\
       -d '{{"model": "{DEMO_MODEL_NAME}", "stream": true, "messages": [{{"role": "user", "content": "Where is my order?"}}]}}'
  .venv/bin/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{api_url}/v1", api_key="{api_key}")
for chunk in client.chat.completions.create(model="{DEMO_MODEL_NAME}", stream=True,
        messages=[{{"role": "user", "content": "Where is my order?"}}]):
    print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="", flush=True)
print()
PY
  (GET {api_url}/v1/models lists the models the miners serve now.)

Buy some inference (idle jobs); a few of them cross the threshold, and a burn shows in /burns
and on {api_url}/transparency:
  for i in 1 2 3 4; do curl -s -X POST '{api_url}/idle-job' -H "Authorization: Bearer {api_key}" \\
       -H 'Content-Type: application/json' -d '{{"prompt": "Summarise our refund policy", "max_tokens": 64}}'; echo; done
  sleep 15; curl -s {api_url}/burns

Your account (balance, holds, deposit instructions) and what you used this month:
  curl -s {api_url}/account -H "Authorization: Bearer {api_key}"
  curl -s '{api_url}/usage?group_by=kind' -H "Authorization: Bearer {api_key}"

Top up the demo business on chain: a stablecoin transfer to the treasury carrying its
deposit reference, credited after {env['CONFIRMATIONS']} confirmation(s), shown in /deposits and on
the transparency page (`mia verify-deposits --rpc {rpc_url} --api {api_url}` checks them):
  .venv/bin/mia deposit --business-ref {deposit_ref} --amount 10

API key: {api_key}
""", flush=True)
