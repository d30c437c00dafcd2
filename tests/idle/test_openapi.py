"""The idle, API-key and metrics endpoints are declared, so they are documented."""

from __future__ import annotations


async def test_openapi_documents_idle_endpoints(api):  # type: ignore[no-untyped-def]
    doc = (await api.client.get("/openapi.json")).json()
    paths = doc["paths"]
    expected = {
        "/idle-job": {"post"}, "/idle-job/next": {"get"}, "/idle-job/result": {"post"},
        "/idle-job/{job_id}": {"get"}, "/idle-job/{job_id}/extend": {"post"},
        "/idle-job/{job_id}/release": {"post"}, "/idle-job/process/{job_id}": {"get", "post"},
        "/api-keys": {"get", "post"}, "/api-keys/{key_id}": {"delete"}, "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    create = paths["/idle-job"]["post"]
    assert create["security"] == [{"ApiKey": []}]
    assert "202" in create["responses"] and "401" in create["responses"]
    body = doc["components"]["schemas"]["IdleJobIn"]["properties"]
    assert body["max_tokens"]["minimum"] == 1 and body["max_tokens"]["maximum"] == 4096
    assert "usd_earned" not in doc["components"]["schemas"]["IdleResultIn"]["properties"]
