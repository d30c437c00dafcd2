"""GET /metrics: seed fields from the ledger, queue depths, miners, jobs; JSON or Prometheus."""

from __future__ import annotations

import time
from decimal import Decimal

from tests.idle.support import next_idle, post_idle_result, submit
from tests.support.harness import running_app


async def test_metrics_json_and_prometheus(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        r = await api.client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        empty = r.json()
        assert empty["runpod_income_usd"] == "0.000000"
        assert empty["total_idle_jobs_processed"] == 0
        assert Decimal(empty["total_buyback_usd"]) == 0 and empty["last_buyback_timestamp"] is None

        key = await api.api_key("outside-co", "idle")
        chat_key = await api.api_key("shop", "chat")
        miner = await api.miner()
        for i in range(3):
            await submit(api, key, f"p{i}", max_tokens=1000)
        for output in ("It began in 1789.", "x"):  # 9 and 1 tokens, whatever is reported
            job = await next_idle(miner, wait=1)
            assert (await post_idle_result(miner, job, output, tokens=333)).status_code == 200
        await api.chat(chat_key, "waiting")

        m = (await api.client.get("/metrics")).json()
        assert m["runpod_income_usd"] == "0.000020"  # (9 + 1) x 0.002 / 1000
        assert m["idle_revenue_usd_by_source"] == {"miner": "0.000020", "runpod": "0.000000"}
        assert m["unallocated_revenue_usd"] == "0.000020"
        assert m["total_idle_jobs_processed"] == 2
        assert m["queue_depth"] == {"chat": 1, "idle": 1}
        assert m["active_miners"] == 1
        assert m["jobs"]["idle"] == {"completed": 2, "queued": 1}
        assert m["jobs"]["chat"] == {"queued": 1}

        for request in (api.client.get("/metrics", params={"format": "prometheus"}),
                        api.client.get("/metrics", headers={"Accept": "text/plain"})):
            r = await request
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = r.text
            assert "# TYPE mia_runpod_income_usd counter" in text
            assert "\nmia_runpod_income_usd 0.000020\n" in text
            assert 'mia_idle_revenue_usd{source="miner"} 0.000020' in text
            assert "\nmia_idle_jobs_processed_total 2\n" in text
            assert 'mia_queue_depth{kind="chat"} 1' in text
            assert 'mia_jobs{kind="idle",status="completed"} 2' in text
            assert "\nmia_active_miners 1\n" in text
        r = await api.client.get("/metrics", params={"format": "json"},
                                 headers={"Accept": "text/plain"})
        assert r.headers["content-type"].startswith("application/json")


async def test_metrics_stay_cheap(settings_factory):  # type: ignore[no-untyped-def]
    """Aggregates only: the cost does not grow with the number of ledger rows read in Python."""
    async with running_app(settings_factory()) as api:
        key = await api.api_key("outside-co", "idle")
        miner = await api.miner()
        for i in range(60):
            await submit(api, key, f"p{i}", max_tokens=10)
        while (job := await next_idle(miner, wait=0)) is not None:
            await post_idle_result(miner, job, "x", tokens=7)
        started = time.perf_counter()
        for _ in range(20):
            m = (await api.client.get("/metrics")).json()
        per_call_ms = (time.perf_counter() - started) / 20 * 1000
        # "x" is one token, whatever the miner reported
        assert m["total_idle_jobs_processed"] == 60 and m["runpod_income_usd"] == "0.000120"
        print(f"\nGET /metrics with 60 ledger rows: {per_call_ms:.1f} ms per call")
        assert per_call_ms < 200
