"""`mia serve` passes the server limits from Settings (app/serving.py) to uvicorn."""

from __future__ import annotations

from typing import Any

import uvicorn

from app.cli import serve_api
from app.config import Settings
from app.serving import uvicorn_limits


def test_serve_passes_the_limits(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    settings = Settings(_env_file=None, server_keepalive_s=61, server_graceful_shutdown_s=7,  # type: ignore[call-arg]
                        server_max_connections=123, forwarded_allow_ips="10.0.0.1")
    assert serve_api(settings) == 0
    assert seen["timeout_keep_alive"] == 61 and seen["timeout_graceful_shutdown"] == 7
    assert seen["limit_concurrency"] == 123
    # X-Forwarded-For is the app's business (FORWARDED_ALLOW_IPS, app/main.py), not uvicorn's,
    # whose own trust list would come from the environment unchecked.
    assert seen["proxy_headers"] is False and "forwarded_allow_ips" not in seen


def test_the_limits_are_valid_uvicorn_options_and_0_means_none() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    config = uvicorn.Config("app.main:create_app", factory=True, **uvicorn_limits(defaults))
    assert config.timeout_keep_alive == 75 and config.timeout_graceful_shutdown == 35
    assert config.limit_concurrency == 10_000
    off = uvicorn_limits(Settings(_env_file=None, server_max_connections=0,  # type: ignore[call-arg]
                                  server_graceful_shutdown_s=0))
    assert off["limit_concurrency"] is None and off["timeout_graceful_shutdown"] is None
