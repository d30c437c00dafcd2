"""CORS from settings: browsers on the allowed origins may call the real endpoints (preflight for
GET/POST/DELETE with Authorization and Content-Type) and read Retry-After; others may not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings
from tests.support.harness import running_app

WIDGET = "https://widget.example"
EVIL = "https://evil.example"


def preflight(origin: str, method: str, headers: str = "authorization, content-type") -> dict:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers}


@pytest.mark.parametrize("method, path", [("POST", "/chat"), ("GET", "/chat/abc"),
                                          ("DELETE", "/api-keys/1"), ("GET", "/job/next")])
async def test_preflight_for_allowed_origin(settings_factory, method, path) -> None:  # type: ignore[no-untyped-def]
    # a pasted trailing "/" is forgiven
    async with running_app(settings_factory(cors_origins=f"{WIDGET}/,https://app.example")) as api:
        r = await api.client.options(path, headers=preflight(WIDGET, method))
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == WIDGET
        assert method in r.headers["access-control-allow-methods"]
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "access-control-allow-credentials" not in r.headers  # off by default
        assert int(r.headers["access-control-max-age"]) > 0


async def test_refused_origins_methods_and_headers(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(cors_origins=WIDGET)) as api:
        r = await api.client.options("/chat", headers=preflight(EVIL, "POST"))
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = await api.client.options("/chat", headers=preflight(WIDGET, "PUT"))
        assert r.status_code == 400
        r = await api.client.options("/chat", headers=preflight(WIDGET, "POST", "x-secret"))
        assert r.status_code == 400
        # simple requests: the answer is there, but the browser is not allowed to read it
        r = await api.client.get("/health", headers={"Origin": EVIL})
        assert "access-control-allow-origin" not in r.headers


async def test_simple_requests_and_429_expose_retry_after(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(cors_origins=WIDGET, rate_limit_key_per_s=1,
                                rate_limit_key_burst=1)
    async with running_app(settings) as api:
        r = await api.client.get("/health", headers={"Origin": WIDGET})
        assert r.headers["access-control-allow-origin"] == WIDGET
        assert "Origin" in r.headers["vary"]
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()
        key = await api.api_key()
        auth = {"Authorization": f"Bearer {key}", "Origin": WIDGET}
        codes = []
        for _ in range(5):
            r = await api.client.get("/chat/nope", headers=auth)
            codes.append(r.status_code)
            if r.status_code == 429:
                break
        assert codes[-1] == 429, codes
        assert r.headers["access-control-allow-origin"] == WIDGET  # errors carry CORS too
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()
        assert int(r.headers["retry-after"]) >= 1


async def test_wildcard(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(cors_origins="*")) as api:
        r = await api.client.options("/chat", headers=preflight(EVIL, "POST"))
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        r = await api.client.get("/health", headers={"Origin": EVIL})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


async def test_credentials_only_with_named_origins(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(cors_origins=WIDGET,
                                            cors_allow_credentials=True)) as api:
        r = await api.client.options("/chat", headers=preflight(WIDGET, "POST"))
        assert r.headers["access-control-allow-credentials"] == "true"
        assert r.headers["access-control-allow-origin"] == WIDGET
    # "*" with credentials would let every site call the API as the user: refused at start-up
    with pytest.raises(ValidationError, match="CORS_ALLOW_CREDENTIALS"):
        Settings(_env_file=None, cors_origins="*", cors_allow_credentials=True)  # type: ignore[call-arg]
    assert Settings(_env_file=None, cors_origins="https://a.example, *").cors_origins == ["*"]  # type: ignore[call-arg]


async def test_no_cors_without_origins(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        r = await api.client.get("/health", headers={"Origin": WIDGET})
        assert "access-control-allow-origin" not in r.headers
        r = await api.client.options("/chat", headers=preflight(WIDGET, "POST"))
        assert "access-control-allow-origin" not in r.headers
