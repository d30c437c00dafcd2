"""/metrics behind METRICS_TOKEN: open by default, a Bearer token when one is set."""

from __future__ import annotations

from tests.support.harness import running_app


async def test_metrics_want_the_token_when_one_is_set(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(metrics_token="s3cret-scrape")) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-scrape"}):
            r = await api.client.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "invalid_metrics_token"
        ok = {"Authorization": "Bearer s3cret-scrape"}
        assert (await api.client.get("/metrics", headers=ok)).status_code == 200
        r = await api.client.get("/metrics", params={"format": "prometheus"}, headers=ok)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert (await api.client.get("/health")).status_code == 200  # probes need no token


async def test_metrics_are_public_without_a_token(api) -> None:  # type: ignore[no-untyped-def]
    assert (await api.client.get("/metrics")).status_code == 200
