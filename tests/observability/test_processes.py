"""The real deployment shape: `mia serve --workers 2` and `mia worker`, sharing one
PROMETHEUS_MULTIPROC_DIR, logging JSON lines. /metrics adds up both API processes and the
worker; a request id from a 4xx and a 5xx response finds that request's log lines, and an idle
job's request id is on the worker's lines about it; no log line of a full chat cycle holds the
prompt, the answer, the API key, the session token or the signature. Then a real Prometheus
(Debian's binary) scrapes the running system under a little load: every series the alerts and
the dashboard use exists with samples, and every dashboard panel's PromQL evaluates (the core
panels to something)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from eth_account import Account

from app.accounts import ledger
from app.accounts.keys import create_api_key
from app.config import Settings
from app.db import Database
from app.localredis import free_port
from tests.idle.support import runpod_settings
from tests.observability.test_metrics_endpoint import families, value
from tests.support.harness import SimMiner

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mia.json"


def _used_series() -> set[str]:
    exprs = [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    return {m for e in exprs for m in re.findall(r"\b(mia_[a-z_]+|up)\b", e)}


async def _with_prometheus(base: str, tmp_path: Path) -> None:
    """Prometheus scrapes `base` twice a second while a little load runs; then its HTTP API."""
    port = free_port()
    host = base.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
        "scrape_configs": [{"job_name": "mia", "metrics_path": "/metrics",
                            "params": {"format": ["prometheus"]},
                            "static_configs": [{"targets": [host]}]}]}))
    log = tmp_path / "prometheus.log"
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}",  # type: ignore[list-item]
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    stop = asyncio.Event()

    async def load() -> None:  # a little traffic while Prometheus watches
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            while not stop.is_set():
                await c.get("/health")
                await c.get("/network")
                await asyncio.sleep(0.05)
    traffic = asyncio.create_task(load())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            async def query(expr: str) -> list[Any]:
                r = await api.get("/api/v1/query", params={"query": expr})
                body = r.json()
                assert r.status_code == 200 and body["status"] == "success", (expr, body)
                return body["data"]["result"]  # type: ignore[no-any-return]
            deadline = time.monotonic() + 90
            while True:  # ten scrapes in: rate() over [1m] has points to work with
                try:
                    if await query('count_over_time(up{job="mia"}[1m]) >= 10'):
                        break
                except (httpx.TransportError, ValueError, AssertionError):
                    pass
                assert time.monotonic() < deadline and prom.poll() is None, log.read_text()[-3000:]
                await asyncio.sleep(0.5)
            assert (await query('up{job="mia"}'))[0]["value"][1] == "1"
            missing = [name for name in sorted(_used_series()) if not await query(name)]
            assert not missing, f"series the alerts or the dashboard use, absent: {missing}"
            for panel in json.loads(DASHBOARD.read_text())["panels"]:
                core = panel["description"].startswith("core")
                for target in panel["targets"]:
                    result = await query(target["expr"])  # a parse error fails in query()
                    assert result or not core, f"core panel {panel['title']!r} is empty"
    finally:
        stop.set()
        await traffic
        prom.terminate()
        prom.wait(20)


def _env(settings: Settings, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "DATABASE_", "REDIS_", "PROMETHEUS_", "LOG_"))}
    env.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
               REDIS_PREFIX=settings.redis_prefix, PUBLIC_URL=settings.public_url,
               CHAIN_ID=str(settings.chain_id), LOG_FORMAT="json", LOG_LEVEL="INFO",
               RUNPOD_BASE_URL=str(settings.runpod_base_url),
               RUNPOD_API_KEY=settings.runpod_api_key.get_secret_value(),  # type: ignore[union-attr]
               RUNPOD_ENDPOINT_ID=str(settings.runpod_endpoint_id),
               IDLE_TO_RUNPOD_AFTER_S="0.2", OPENAI_MAX_WAIT_S="1",
               # one new wallet answers: no probation, as the in-process tests' settings say
               PROBATION_JOBS=str(settings.probation_jobs),
               VERIFY_SAMPLE_RATE=str(settings.verify_sample_rate),
               CANARY_RATE=str(settings.canary_rate), **more)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lines(*paths: Path) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        for raw in path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                pytest.fail(f"{path.name}: a line that is not JSON: {raw[:200]!r}")
    return out


@pytest.mark.timeout(400)
async def test_two_api_processes_and_the_worker(settings_factory, postgres_db, runpod_standin,  # type: ignore[no-untyped-def]
                                                tmp_path) -> None:
    settings = settings_factory(postgres_db, **runpod_settings(runpod_standin))
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = _env(settings, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--workers", "2",
                            "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=api_log.open("ab"), stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env,
                              stdout=worker_log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    db = Database(settings.database_url)
    try:
        async with db.transaction() as session:
            stored, key = await create_api_key(session, "acme", "chat,idle")
            await ledger.credit(session, stored.business_id, Decimal(1000),  # idle jobs cost
                                reference="test-funds", actor="test")
        bearer = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 180  # a busy host starts slowly
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and api.poll() is None, api_log.read_text()
                await asyncio.sleep(0.2)

        # load over new connections, so both server processes take some
        async def one() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                assert (await c.get("/health")).status_code == 200
        await asyncio.gather(*(one() for _ in range(40)))

        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            rid4, rid5, rid_idle = (f"test-{what}-{uuid.uuid4().hex}" for what in ("4xx", "5xx", "idle"))
            r4 = await client.post("/chat", json={"message": 5}, headers={**bearer, "X-Request-Id": rid4})
            assert r4.status_code == 422 and r4.json()["request_id"] == rid4
            prompt, answer = f"PROMPT-{uuid.uuid4().hex}", f"ANSWER-{uuid.uuid4().hex}"
            miner = SimMiner(client, Account.create())
            await miner.register()
            declared = await client.get("/job/next", params={"wait": 0, "model": "m-obs"},
                                        headers=miner.auth)  # the model is served from now on
            assert declared.status_code == 204
            r5 = await client.post("/v1/chat/completions", headers={**bearer, "X-Request-Id": rid5},
                                   json={"model": "m-obs",
                                         "messages": [{"role": "user", "content": prompt}]})
            assert r5.status_code == 504 and r5.json()["request_id"] == rid5 == r5.headers["x-request-id"]
            idle = await client.post("/idle-job", json={"prompt": prompt, "max_tokens": 8},
                                     headers={**bearer, "X-Request-Id": rid_idle})
            assert idle.status_code == 202
            idle_id = idle.json()["job_id"]

            # a full chat cycle: client, miner (signed in), result, answer
            chat = await client.post("/chat", json={"message": prompt}, headers=bearer)
            job = None
            while job is None or job["prompt"] != prompt:  # the /v1 job may come first
                job = await miner.next_job(wait=5)
                assert job is not None
                if job["prompt"] != prompt:
                    await client.post(f"/job/{job['job_id']}/release", headers=miner.auth,
                                      json={"lease_id": job["lease_id"]})
            signature = miner.sign_result(job["job_id"], answer)
            assert (await miner.post_result(job, answer, signature=signature)).status_code == 200
            done = await client.get(f"/chat/{chat.json()['job_id']}", params={"wait": 5}, headers=bearer)
            assert done.json()["response"] == answer

            for _ in range(100):  # the worker hands the idle job to RunPod (the stand-in)
                body = (await client.get(f"/idle-job/{idle_id}", headers=bearer)).json()
                if body["status"] == "completed":
                    break
                await asyncio.sleep(0.1)
            assert body["status"] == "completed", body

            text = (await client.get("/metrics", params={"format": "prometheus"})).text
        m = families(text)
        # both API processes' requests, added up
        assert value(m, "mia_http_request_duration_seconds_count", route="/health") >= 41
        assert value(m, "mia_http_request_duration_seconds_count", route="/v1/chat/completions",
                     status="5xx") == 1
        # the worker's figures too (it shares the directory)
        assert value(m, "mia_runpod_call_seconds_count", call="run", outcome="ok") >= 1
        assert value(m, "mia_lease_outcomes_total", kind="chat", outcome="completed") == 1
        if PROMETHEUS is not None:
            await _with_prometheus(base, tmp_path)
    finally:
        await db.dispose()
        _stop(worker)
        _stop(api)

    api_lines, worker_lines = _lines(api_log), _lines(worker_log)
    assert len({line["pid"] for line in api_lines if line.get("request_id")}) >= 2, \
        "every request line came from one server process"

    def of(rid: str) -> list[dict[str, Any]]:
        return [line for line in api_lines + worker_lines if line.get("request_id") == rid]

    four, five = of(rid4), of(rid5)
    assert any("answered 422" in line["msg"] for line in four)
    assert any('"POST /chat HTTP/1.1" 422' in line["msg"] for line in four)  # the access line
    assert all(line["pid"] == four[0]["pid"] for line in four)  # one request, one process
    assert any("answered 504" in line["msg"] for line in five)
    assert any("/v1/chat/completions" in line["msg"] and "504" in line["msg"] for line in five)
    # the 4xx line names its business (the key's), the worker's lines name the idle job
    assert all(line.get("business_id") for line in five)
    by_worker = [line for line in worker_lines if line.get("request_id") == rid_idle]
    assert by_worker and all(line.get("job_id") == str(idle_id) for line in by_worker)
    assert any("completed on RunPod" in line["msg"] for line in by_worker)

    everything = api_log.read_text() + worker_log.read_text()
    for secret in (prompt, answer, key, miner.token, signature, signature.removeprefix("0x")):
        assert secret and secret not in everything, "a secret or a conversation reached the logs"
    if PROMETHEUS is None:
        pytest.skip("the logs and /metrics checks passed; the real-Prometheus part needs "
                    "Debian's prometheus binary (`make install` installs it as root)")
