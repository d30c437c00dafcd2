"""Regressions found by the schemathesis fuzz (tests/fuzz): what the server answers is what
/openapi.json documents."""

from __future__ import annotations


async def test_metrics_documents_the_prometheus_text_it_serves(api):  # type: ignore[no-untyped-def]
    doc = (await api.client.get("/openapi.json")).json()
    content = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    for params, headers in (({"format": "prometheus"}, {}), ({}, {"Accept": "text/plain"}),
                            ({}, {})):
        r = await api.client.get("/metrics", params=params, headers=headers)
        assert r.status_code == 200
        assert r.headers["content-type"].split(";")[0] in content, (params, headers)
