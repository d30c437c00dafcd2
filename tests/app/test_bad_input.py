"""Bad input anywhere gets a clear 4xx JSON error: never a 500, never a traceback."""

from __future__ import annotations

import pytest


def assert_error(r, status: int, code: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"error", "detail"} and body["detail"], body
    assert "Traceback" not in r.text
    if code:
        assert body["error"] == code, body


@pytest.fixture
async def keyed(api):  # type: ignore[no-untyped-def]
    key = await api.api_key()
    miner = await api.miner()
    return api, {"Authorization": f"Bearer {key}"}, miner


async def test_chat_bodies(keyed):  # type: ignore[no-untyped-def]
    api, auth, _ = keyed
    post = api.client.post
    assert_error(await post("/chat", json={}, headers=auth), 422, "validation_error")
    assert_error(await post("/chat", json={"message": ""}, headers=auth), 422)
    assert_error(await post("/chat", json={"message": 42}, headers=auth), 422)
    assert_error(await post("/chat", json={"message": "x" * 8001}, headers=auth), 422)
    assert_error(await post("/chat", json={"message": "hi", "session_id": "../etc"}, headers=auth), 422)
    assert_error(await post("/chat", json=["message"], headers=auth), 400, "invalid_json")
    assert_error(await post("/chat", content=b"{nope", headers=auth), 400, "invalid_json")
    assert_error(await post("/chat", content=b"", headers=auth), 400, "body_required")
    huge = b'{"message": "' + b"a" * (300 * 1024) + b'"}'
    assert_error(await post("/chat", content=huge, headers=auth), 413, "payload_too_large")
    assert_error(await post("/chat", json={"message": "hi"}, params={"wait": "soon"}, headers=auth), 422)
    assert_error(await post("/chat", json={"message": "hi"}, params={"wait": 61}, headers=auth), 422)
    assert_error(await post("/chat", json={"message": "hi"}), 401, "missing_api_key")
    assert_error(await post("/chat", json={"message": "hi"}, headers={"Authorization": "Bearer x"}), 401)


async def test_unknown_ids_and_routes(keyed):  # type: ignore[no-untyped-def]
    api, auth, miner = keyed
    get = api.client.get
    assert_error(await get("/chat/nope", headers=auth), 404, "job_not_found")
    assert_error(await get("/chat/" + "x" * 500, headers=auth), 404)
    assert_error(await get("/chat/sessions/nope/messages", headers=auth), 404)
    assert_error(await get("/no/such/route"), 404, "not_found")
    assert_error(await api.client.delete("/chat"), 405, "method_not_allowed")
    result = {"job_id": "nope", "lease_id": "x", "output": "hi",
              "signature": miner.sign_result("nope", "hi")}
    assert_error(await api.client.post("/job/result", json=result, headers=miner.auth), 404)
    assert_error(await api.client.post("/job/nope/extend", json={"lease_id": "x"},
                                       headers=miner.auth), 404)


async def test_miner_bodies(keyed):  # type: ignore[no-untyped-def]
    api, _, miner = keyed
    post = api.client.post
    assert_error(await post("/job/result", json={"job_id": "a"}, headers=miner.auth), 422)
    assert_error(await post("/job/result", json={"job_id": "a", "lease_id": "b", "output": "c",
                                                 "output_tokens": "3", "signature": "0x00"},
                            headers=miner.auth), 422)
    assert_error(await post("/job/result", json={"job_id": "a", "lease_id": "b", "output": "c",
                                                 "output_tokens": -1, "signature": "0x00"},
                            headers=miner.auth), 422)
    assert_error(await api.client.get("/job/next", params={"wait": 31}, headers=miner.auth), 422)
    assert_error(await api.client.get("/job/next", params={"wait": "x"}, headers=miner.auth), 422)
    assert_error(await post("/register_miner", json={"message": 1, "signature": 2}), 422)
    assert_error(await post("/auth/login", json={}), 422)
    assert_error(await api.client.get("/auth/nonce"), 422)
    assert_error(await api.client.get("/auth/nonce", params={"address": "0x" + "zz" * 20}), 400,
                 "invalid_address")


async def test_sessions_are_private_to_their_business(api):  # type: ignore[no-untyped-def]
    a, b = await api.api_key("alpha"), await api.api_key("beta")
    chat = (await api.chat(a, "secret question")).json()
    hb = {"Authorization": f"Bearer {b}"}
    assert_error(await api.client.get(f"/chat/{chat['job_id']}", headers=hb), 404)
    assert_error(await api.client.get(f"/chat/sessions/{chat['session_id']}/messages", headers=hb), 404)
    # the same id from another business is that business's own session: it sees nothing of a's
    r = await api.chat(b, "hijack", session_id=chat["session_id"])
    assert r.status_code == 202, r.text
    r = await api.client.get(f"/chat/sessions/{chat['session_id']}/messages", headers=hb)
    assert [m["message"] for m in r.json()["messages"]] == ["hijack"]


async def test_anonymous_chat_is_off_by_default_and_rate_limited_when_on(settings_factory):  # type: ignore[no-untyped-def]
    from tests.support.harness import running_app
    async with running_app(settings_factory(chat_allow_anonymous=True,
                                            chat_anon_rate_per_min=3)) as api:
        codes = [(await api.chat(None, "hi")).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        r = await api.chat(None, "hi")
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1


async def test_openapi_and_offline_docs(api):  # type: ignore[no-untyped-def]
    spec = (await api.client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    for path in ("/chat", "/chat/{job_id}", "/job/next", "/job/result", "/register_miner",
                 "/auth/nonce", "/auth/login", "/health", "/"):
        assert path in spec["paths"], path
    for page in ("/docs", "/redoc"):
        html = (await api.client.get(page)).text
        assert "/openapi.json" in html and "http" not in html.replace("http-equiv", "")
    r = await api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert r.status_code == 200 and len(r.content) > 100_000
    r = await api.client.get("/docs/assets/redoc.standalone.js")
    assert r.status_code == 200 and len(r.content) > 100_000
