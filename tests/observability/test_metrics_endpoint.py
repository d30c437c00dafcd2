"""/metrics: the official client's histograms beside every figure it had, its database figures
cached per process (issue 23 M4), a rate limit per IP, bounded labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from app.accounts.keys import create_api_key
from app.observability.http import METHODS
from tests.support.harness import running_app


def families(text: str) -> dict[str, dict[str, list]]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out  # type: ignore[return-value]


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(s.value for s in samples.get(name, [])
               if all(s.labels.get(k) == v for k, v in labels.items()))


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict:  # type: ignore[type-arg]
    r = await client.get("/metrics", params={"format": "prometheus"}, headers=headers)
    assert r.status_code == 200, r.text
    return families(r.text)


OLD_FIGURES = ("mia_runpod_income_usd", "mia_idle_revenue_usd", "mia_unallocated_revenue_usd",
               "mia_idle_jobs_processed_total", "mia_buyback_usd_total", "mia_serv_burned_total",
               "mia_last_buyback_timestamp_seconds", "mia_buyback_active", "mia_queue_depth",
               "mia_active_miners", "mia_jobs", "mia_output_tokens_reported",
               "mia_output_tokens_counted", "mia_miners_overreporting")


async def test_a_chat_cycle_shows_in_the_histograms_with_every_old_figure(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        key = await api.api_key()
        miner = await api.miner()
        before = await scrape(api.client)  # the process's metrics outlive one app: count growth
        created = (await api.chat(key, "histogram me")).json()
        job = await miner.next_job()
        assert job is not None and job["job_id"] == created["job_id"]
        assert (await miner.post_result(job, "done")).status_code == 200
        await api.client.get(f"/chat/{created['job_id']}", headers={"Authorization": f"Bearer {key}"})
        for path in ("/no/such/thing", "/chat/x" * 40, "/" + "z" * 300):
            assert (await api.client.get(path)).status_code == 404
        await api.client.request("BREW", "/health")
        m = await scrape(api.client)
    for name in OLD_FIGURES:  # (the parser names a counter's samples name_total)
        assert name in m or f"{name}_total" in m, name
    assert value(m, "mia_jobs", kind="chat", status="completed") == 1

    def grew(name: str, **labels: str) -> float:
        return value(m, name, **labels) - value(before, name, **labels)
    http = "mia_http_request_duration_seconds_count"
    assert grew(http, route="/chat", method="POST", status="2xx") == 1
    # the route template, never the raw path: any job id is one label
    assert grew(http, route="/chat/{job_id}", method="GET", status="2xx") == 1
    routes = {s.labels["route"] for s in m[http]}
    assert "unmatched" in routes and not any("zzz" in r or "/chat/x" in r for r in routes)
    # a known method or "other" (other tests of this process may have sent HEAD or OPTIONS)
    assert {s.labels["method"] for s in m[http]} <= METHODS | {"other"}
    assert grew("mia_lease_outcomes_total", kind="chat", outcome="completed") == 1
    assert grew("mia_job_dispatch_seconds_count", kind="chat") == 1
    assert "mia_redis_round_trip_seconds" in m
    assert value(m, "mia_db_pool_connections", pool="sqlalchemy", state="size") >= 1


async def test_lease_outcomes_count_releases_and_rejections(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        key = await api.api_key()
        miner = await api.miner()
        before = await scrape(api.client)
        await api.chat(key, "one")
        job = await miner.next_job()
        r = await api.client.post(f"/job/{job['job_id']}/release", headers=miner.auth,  # type: ignore[index]
                                  json={"lease_id": job["lease_id"]})  # type: ignore[index]
        assert r.status_code == 200, r.text
        other = await api.miner()  # the releaser waits out its cooldown
        job = await other.next_job()
        assert job is not None
        bad = await other.post_result(job, "x", signature="0x" + "11" * 65)
        assert bad.status_code == 401, bad.text
        after = await scrape(api.client)
    for outcome in ("released", "rejected"):
        grew = (value(after, "mia_lease_outcomes_total", kind="chat", outcome=outcome)
                - value(before, "mia_lease_outcomes_total", kind="chat", outcome=outcome))
        assert grew == 1, outcome


async def test_the_database_figures_are_computed_once_per_cache_period(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """M4: each /metrics ran full-table GROUP BYs; now one process computes them at most once
    per METRICS_CACHE_S, however many scrapes arrive (counted on the database's own cursor)."""
    async with running_app(settings_factory(metrics_cache_s=60)) as api:
        grouped: list[str] = []

        def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            if "GROUP BY" in statement.upper():
                grouped.append(statement)
        event.listen(api.ctx.db.engine.sync_engine, "before_cursor_execute", count)
        for i in range(10):
            fmt = "prometheus" if i % 2 else "json"
            assert (await api.client.get("/metrics", params={"format": fmt})).status_code == 200
        once = len(grouped)
        assert once > 0
        key = await api.api_key()
        await api.chat(key, "not yet counted")
        body = (await api.client.get("/metrics")).json()
        assert len(grouped) == once  # served from the cache: no new aggregate
        assert body["jobs"]["chat"] == {}  # as computed before the chat


async def test_metrics_are_rate_limited_per_client_ip(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(rate_limit_metrics_per_min=3)) as api:
        for _ in range(3):
            assert (await api.client.get("/metrics")).status_code == 200
        r = await api.client.get("/metrics")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"] == "rate_limited" and r.json()["request_id"] == r.headers["x-request-id"]
        # another address has its own bucket
        other = await api.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert other.status_code in (200, 429)


async def test_metrics_can_be_switched_off(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(metrics_enabled=False)) as api:
        await api.client.get("/health")
        r = await api.client.get("/metrics", params={"format": "prometheus"})
        assert r.status_code == 200 and "mia_jobs" in r.text
        assert r.headers["x-request-id"]  # request ids stay on
    async with running_app(settings_factory()) as api:  # and back on for the next tests
        pass
