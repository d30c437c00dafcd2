"""Every request has an id: a caller's well-formed X-Request-Id, else one of ours; it comes
back as X-Request-Id and in every error body (ours and /v1's), 500s included, and it is on the
log lines written while the request ran."""

from __future__ import annotations

import logging

import httpx
import pytest

from app.main import create_app
from app.observability import logs
from app.ops import metrics as ops_metrics


async def test_a_well_formed_id_is_kept_and_a_bad_one_replaced(api) -> None:  # type: ignore[no-untyped-def]
    r = await api.client.get("/health", headers={"X-Request-Id": "lb-7f3a9c2e-0001"})
    assert r.headers["x-request-id"] == "lb-7f3a9c2e-0001"
    for bad in ("short", "has space in it", "x" * 200, '"quoted"-id-123', "\u00fcn\u00efcode-id-123".encode()):
        r = await api.client.get("/health", headers={"X-Request-Id": bad})
        rid = r.headers["x-request-id"]
        assert rid != bad and len(rid) == 32
    ids = {(await api.client.get("/health")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_error_bodies_carry_the_request_id(api) -> None:  # type: ignore[no-untyped-def]
    r = await api.client.post("/chat", json={"message": 5}, headers={"X-Request-Id": "req-4xx-abcdef"})
    assert r.status_code in (401, 422)
    assert r.json()["request_id"] == "req-4xx-abcdef" == r.headers["x-request-id"]
    r = await api.client.get("/nowhere")
    assert r.status_code == 404 and r.json()["request_id"] == r.headers["x-request-id"]
    r = await api.client.post("/v1/chat/completions", json={})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"  # OpenAI's shape kept
    assert r.json()["request_id"] == r.headers["x-request-id"]


async def test_a_500_carries_it_in_body_header_and_the_error_log(settings_factory, monkeypatch,
                                                              caplog) -> None:  # type: ignore[no-untyped-def]
    async def broken(ctx):  # type: ignore[no-untyped-def]
        logging.getLogger("app.test").warning("about to fail")
        raise RuntimeError("a bug")
    monkeypatch.setattr(ops_metrics, "collect", broken)
    app = create_app(settings_factory())
    caplog.handler.addFilter(logs.ContextFilter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/metrics", headers={"X-Request-Id": "req-5xx-abcdef"})
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    assert r.json()["request_id"] == "req-5xx-abcdef" == r.headers["x-request-id"]
    mine = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "req-5xx-abcdef"]
    assert {rec.getMessage() for rec in mine} >= {"about to fail", "GET /metrics answered 500"}


def test_json_lines_carry_the_context(capsys) -> None:  # type: ignore[no-untyped-def]
    import orjson

    from app.observability import bound
    logs.setup("json", "INFO")
    try:
        with bound(request_id="req-json-123456", job_id="42", miner="0xabc"):
            logging.getLogger("app.x").info("hello %s", "there")
        logging.getLogger("app.x").info("outside")
    finally:
        logs.setup("text", "INFO")
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["msg"] == "hello there" and lines[0]["request_id"] == "req-json-123456"
    assert lines[0]["job_id"] == "42" and lines[0]["miner"] == "0xabc"
    assert lines[0]["level"] == "info" and "ts" in lines[0]
    assert "request_id" not in lines[1]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_uvicorn_log_config_is_valid(fmt: str) -> None:
    import logging.config

    from app.observability.logs import uvicorn_log_config
    logging.config.dictConfig(uvicorn_log_config(fmt, "INFO"))
    logs.setup("text", "INFO")
