"""Schemathesis fuzzes every operation of our own OpenAPI document against the real app, served by
uvicorn on 127.0.0.1 over real HTTP, in four passes: without credentials (every operation), with a
business API key (scopes chat, idle), with a miner's session token and with an operator's (the
operations that take that credential). Whatever it sends, every answer must be: no 5xx (503 only
from the dependencies deliberately left unconfigured here: the chain and RunPod), a documented
status code, the documented content type, and a body and headers that match the schema.

Bounded and deterministic: a fixed seed, derandomized Hypothesis, no example database, few
examples per operation, long-polls capped at 0 s by the settings (`wait` is still parsed,
validated and passed down, it just never sleeps). Half of the generated requests name real
objects (jobs with their leases, a chat session, an API key, buybacks), so that the 200 answers
are checked against the schema too, not only the 404s of random ids.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from app import __version__
from app.auth.wallet import result_digest
from app.db import Database
from app.main import ROUTERS
from app.migrate import upgrade
from app.models import Buyback, BuybackStatus, BuybackTx, utcnow
from app.openapi import build_openapi
from app.web import all_endpoints
from tests.conftest import make_settings
from tests.support.live import live_server
from tests.support.services import delete_keys, reset_postgres

# 503 is what these dependencies answer when they are not configured, as here (no chain, no
# RunPod). Any other 503 (database, Redis, timeouts) would mean something broke under the fuzz.
UNCONFIGURED = {"treasury_unconfigured", "runpod_not_configured"}


@schemathesis.check
def only_unconfigured_dependencies_are_unavailable(ctx: schemathesis.CheckContext,
                                                   response: schemathesis.Response,
                                                   case: schemathesis.Case) -> None:
    if response.status_code == 503:
        body = response.json()
        code = body.get("error") if isinstance(body, dict) else None
        if code not in UNCONFIGURED:
            raise AssertionError(f"503 {code!r}: only {sorted(UNCONFIGURED)} may be "
                                 "unavailable here")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance,
          only_unconfigured_dependencies_are_unavailable]
CONFIG = schemathesis.Config.from_dict({
    # Fuzz harder by hand: FUZZ_MAX_EXAMPLES=200 FUZZ_SEED=7 pytest tests/fuzz
    "seed": int(os.environ.get("FUZZ_SEED", "20240601")),
    "generation": {"max-examples": int(os.environ.get("FUZZ_MAX_EXAMPLES", "5")),
                   "deterministic": True, "database": "none", "mode": "all"},
    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
    # Coverage (boundary values, missing and mistyped fields, unexpected methods) and fuzzing
    # run; stateful runs need OpenAPI links, which the document does not declare.
    # One unexpected method per path (405) is enough to check those answers.
    "phases": {"stateful": {"enabled": False}, "coverage": {"unexpected-methods": ["PATCH"]}},
})

# The document create_app serves at /openapi.json (test_the_fuzzed_document_is_the_served_one
# proves it): built here because pytest collects the operations before any server runs.
DOCUMENT = build_openapi(all_endpoints(ROUTERS), title="MIA backend", version=__version__)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def _takes(scheme: str) -> Any:
    def match(ctx: Any) -> bool:
        return any(scheme in req for req in ctx.operation.definition.raw.get("security", []))
    return match


def _operators(ctx: Any) -> bool:
    op = ctx.operation
    return _takes("MinerToken")(ctx) and (bool({"treasury", "api-keys", "businesses"}
                                               & set(op.tags or []))
                                          or op.path.startswith("/idle-job/process/"))


# A credential only matters to the operations that take it; public ones ran without any. The
# miner pass also knocks on the operators' doors (403); the operator pass skips the miners'
# (a 403 each, which the miner pass's twin already covers).
ANONYMOUS = schema
WITH_API_KEY = schema.include(_takes("ApiKey"))
# Logging out would revoke the token every later request of the pass uses (the anonymous pass
# still fuzzes /auth/logout, tests/auth/test_logout.py the rest).
WITH_SESSION = schema.include(_takes("MinerToken")).exclude(path="/auth/logout")
OPERATOR_ONLY = schema.include(_operators)  # include() twice would be a union


@dataclass
class Real:
    """Objects that exist on the live server, for path parameters and leases."""

    chat_jobs: list[str] = field(default_factory=list)
    idle_jobs: list[str] = field(default_factory=list)
    leases: dict[str, tuple[str, str]] = field(default_factory=dict)  # kind -> (job, lease)
    sessions: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    buybacks: list[str] = field(default_factory=list)
    businesses: list[str] = field(default_factory=list)


@dataclass
class Live:
    url: str
    headers: dict[str, dict[str, str]]
    session: requests.Session
    real: Real


def _signature(account: LocalAccount, digest: bytes | None = None, text: str | None = None) -> str:
    message = encode_defunct(primitive=digest) if digest is not None else encode_defunct(text=text)
    return "0x" + account.sign_message(message).signature.hex().removeprefix("0x")


def _sign_in(client: httpx.Client, account: LocalAccount, path: str) -> str:
    r = client.get("/auth/nonce", params={"address": account.address})
    r.raise_for_status()
    message = r.json()["message"]
    r = client.post(path, json={"message": message,
                                "signature": _signature(account, text=message)})
    r.raise_for_status()
    return r.json()["token"]  # type: ignore[no-any-return]


async def _seed_buybacks(database_url: str) -> list[str]:
    """A burned buyback with its three transactions and a failed one (no chain runs here)."""
    db = Database(database_url)
    now = utcnow()
    try:
        async with db.transaction() as session:
            burned = Buyback(status=BuybackStatus.burned, usd_amount=Decimal("12.345678"),
                             quote_amount_in=12_345_678, amount_out_min_total=10**21,
                             serv_received=2 * 10**21, serv_burned=2 * 10**21, quote_unspent=0,
                             triggered_by="auto", created_at=now - timedelta(minutes=5),
                             updated_at=now, completed_at=now)
            failed = Buyback(status=BuybackStatus.failed, usd_amount=Decimal("1"),
                             triggered_by="0x" + "ab" * 20, failure_reason="slippage",
                             created_at=now, updated_at=now)
            session.add_all([burned, failed])
            await session.flush()
            for seq, kind in enumerate(["approve", "swap", "burn"]):
                session.add(BuybackTx(
                    buyback_id=burned.id, kind=kind, seq=seq, tx_hash="0x" + f"{seq:02x}" * 32,
                    nonce=seq, raw_tx="0x00", status="mined",
                    amount_in=12_345_678 if kind != "burn" else 2 * 10**21,
                    amount_out_min=10**21 if kind == "swap" else None,
                    amount_out=2 * 10**21 if kind != "approve" else None,
                    block_number=100 + seq, gas_used=50_000, created_at=now, mined_at=now))
            return [str(burned.id), str(failed.id)]
    finally:
        await db.dispose()


def _seed(client: httpx.Client, database_url: str, operator: LocalAccount,
          miner: LocalAccount) -> tuple[dict[str, dict[str, str]], Real]:
    real = Real()
    operator_auth = {"Authorization": f"Bearer {_sign_in(client, operator, '/auth/login')}"}
    miner_auth = {"Authorization": f"Bearer {_sign_in(client, miner, '/register_miner')}"}
    keys = []
    for business in ("fuzz", "spare"):  # the spare one is the key the operator may revoke
        r = client.post("/api-keys", json={"business": business, "scopes": ["chat", "idle"]},
                        headers=operator_auth)
        r.raise_for_status()
        keys.append(r.json())
    key_auth = {"Authorization": f"Bearer {keys[0]['key']}"}
    real.keys.append(str(keys[1]["id"]))
    listed = client.get("/businesses", headers=operator_auth).json()["items"]
    real.businesses = [str(b["id"]) for b in listed]
    for business_id in real.businesses:  # funded: priced jobs are held against the balance
        client.post(f"/businesses/{business_id}/credits", headers=operator_auth,
                    json={"amount_usd": "100", "reference": "fuzz-seed"}).raise_for_status()
    # Per kind: one job answered (with revenue, for idle), one held under a lease the miner
    # pass may extend or release, one left queued for the miner pass's own /next. Idle first:
    # /idle-job/next gives nothing while a chat job waits.
    for kind, prefix in (("idle", "/idle-job"), ("chat", "/job")):
        for i in range(3):
            if kind == "idle":
                r = client.post("/idle-job", json={"prompt": f"summarise {i}", "max_tokens": 8},
                                headers=key_auth)
            else:
                r = client.post("/chat", json={"message": f"hello {i}",
                                               "session_id": "fuzz-session"}, headers=key_auth)
            r.raise_for_status()
            (real.idle_jobs if kind == "idle" else real.chat_jobs).append(r.json()["job_id"])
        done = client.get(f"{prefix}/next", headers=miner_auth).json()
        output = "an answer"
        r = client.post(f"{prefix}/result", headers=miner_auth, json={
            "job_id": done["job_id"], "lease_id": done["lease_id"], "output": output,
            "output_tokens": 2,
            "signature": _signature(miner, digest=result_digest(done["job_id"], output))})
        r.raise_for_status()
        held = client.get(f"{prefix}/next", headers=miner_auth).json()
        real.leases[kind] = (held["job_id"], held["lease_id"])
    real.sessions.append("fuzz-session")
    real.buybacks = asyncio.run(_seed_buybacks(database_url))
    headers = {"anonymous": {}, "api_key": key_auth, "miner": miner_auth,
               "operator": operator_auth}
    return headers, real


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, redis_url: str, sqlite_template: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server per database for every pass and operation (module-scoped: Hypothesis runs
    many inputs per test, and a server per test would dominate the run)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("fuzz") / "mia.db"
        shutil.copy(sqlite_template, path)
        database_url = f"sqlite+aiosqlite:///{path}"
    else:
        database_url = request.getfixturevalue("postgres_base")  # skips without PostgreSQL
        reset_postgres(database_url)
        upgrade(database_url)
    operator, miner = Account.create(), Account.create()
    settings = make_settings(
        database_url, redis_url, operator_addresses=[operator.address],
        chat_allow_anonymous=True,
        # Long-polls capped: `wait` is parsed and validated as documented, never slept on.
        chat_max_wait_s=0, miner_max_wait_s=0,
        # Rate limits high enough that the fuzz reaches the handlers behind them (429 itself
        # is covered by tests/app/test_limits.py); background loops at their production pace.
        chat_anon_rate_per_min=100_000, rate_limit_signin_per_min=100_000,
        rate_limit_auth_fail_per_min=100_000, rate_limit_chain_reads_per_min=100_000,
        reaper_interval_s=1.0, reconcile_interval_s=10.0)
    try:
        with live_server(settings) as url, httpx.Client(base_url=url, timeout=10) as client, \
                requests.Session() as session:
            headers, real = _seed(client, database_url, operator, miner)
            yield Live(url, headers, session, real)
    finally:
        delete_keys(redis_url, f"{settings.redis_prefix}:*")


def test_the_fuzzed_document_is_the_served_one(live: Live) -> None:
    assert live.session.get(f"{live.url}/openapi.json").json() == DOCUMENT


def _name_real_objects(case: schemathesis.Case, real: Real) -> None:
    """About half the requests name real objects instead of generated ones. The choice is a
    function of the generated input, so that Hypothesis replaying an input replays the choice."""
    turn = zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode())
    if turn % 2 == 0:
        return
    params = case.path_parameters
    body = case.body if isinstance(case.body, dict) else None
    kind = "idle" if case.path.startswith("/idle-job") else "chat"
    pick = turn // 2
    if "job_id" in params:
        jobs = real.idle_jobs if kind == "idle" else real.chat_jobs
        params["job_id"] = jobs[pick % len(jobs)]
    if body is not None and "lease_id" in body:  # extend, release, result: a coherent pair
        job_id, lease_id = real.leases[kind]
        body["lease_id"] = lease_id
        if "job_id" in params:
            params["job_id"] = job_id
        if "job_id" in body:
            body["job_id"] = job_id
    for name, values in (("session_id", real.sessions), ("key_id", real.keys),
                         ("buyback_id", real.buybacks), ("business_id", real.businesses)):
        if name in params:
            params[name] = values[pick % len(values)]


def _check(case: schemathesis.Case, live: Live, who: str) -> None:
    _name_real_objects(case, live.real)
    case.call_and_validate(base_url=live.url, session=live.session, headers=live.headers[who],
                           checks=CHECKS, timeout=15)


@ANONYMOUS.parametrize()
def test_without_credentials(case: schemathesis.Case, live: Live) -> None:
    _check(case, live, "anonymous")


@WITH_API_KEY.parametrize()
def test_with_business_api_key(case: schemathesis.Case, live: Live) -> None:
    _check(case, live, "api_key")


@WITH_SESSION.parametrize()
def test_with_miner_session(case: schemathesis.Case, live: Live) -> None:
    _check(case, live, "miner")


@OPERATOR_ONLY.parametrize()
def test_with_operator_session(case: schemathesis.Case, live: Live) -> None:
    _check(case, live, "operator")
