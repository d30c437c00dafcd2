"""GET /account/export (issue 19, GDPR art. 20): every message of a business's sessions exactly
once, as JSON Lines, read a page at a time; another business's never. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from sqlalchemy import select

from app.accounts import data_routes
from app.models import Business, ChatLog
from tests.openai_api.support import MODEL, Miner
from tests.support.harness import running_app

pytestmark = pytest.mark.timeout(120)


async def test_the_export_round_trips_every_message(any_db, settings_factory, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(data_routes, "EXPORT_PAGE", 3)  # several pages, a session across two
    secret = f"OTHER{uuid.uuid4().hex}"
    async with running_app(settings_factory(any_db)) as api:
        a, b = await api.api_key("alpha"), await api.api_key("beta")
        miner = Miner(await api.miner(), MODEL)
        await miner.poll(0)
        # earlier turns brought by a /v1 request
        asked = asyncio.create_task(api.client.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {a}"}, json={
                "model": MODEL, "session_id": "v1-session", "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "line one\nline two \"quoted\" é ✓"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "and now?"}]}))
        job = await miner.poll(5)
        await miner.finish(job, "now this")
        assert (await asked).status_code == 200
        for session in ("b-session", "a-session", "c-session"):
            for i in range(2):
                r = await api.chat(a, f"{session} q{i}", session_id=session, context=f"ctx {i}")
                job = await miner.poll(5)
                assert job is not None and job["job_id"] == r.json()["job_id"]
                await miner.finish(job, f"{session} a{i}")
        await api.chat(a, "unanswered", session_id="a-session")
        await api.chat(b, secret, session_id="a-session")  # same name, other business

        r = await api.client.get("/account/export", headers={"Authorization": f"Bearer {a}"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) for line in r.content.splitlines()]
        async with api.ctx.db.sessions() as s:
            business_a = (await s.execute(select(Business.id).where(Business.name == "alpha"))
                          ).scalar_one()
            stored = (await s.execute(select(ChatLog).where(ChatLog.business_id == business_a)
                                      .order_by(ChatLog.session_id, ChatLog.id))).scalars().all()

    assert secret not in r.text
    assert len(lines) == len(stored) == 4 + 3 * 4 + 1  # /v1: 2 brought + 2; 3 x 4; 1
    assert [(x["session_id"], x["job_id"], x["role"], x["message"]) for x in lines] == [
        (t.session_id, t.job_id, t.role, t.message) for t in stored]  # each once, in order
    assert [x["session_id"] for x in lines] == sorted(x["session_id"] for x in lines)
    first = next(x for x in lines if x["message"] == "a-session q1")
    assert first["context"] == "ctx 1" and first["timestamp"].startswith("20")
    v1 = [x for x in lines if x["session_id"] == "v1-session"]
    assert v1[0]["message"] == "line one\nline two \"quoted\" é ✓" and v1[0]["job_id"] is None
    assert v1[2]["context"] == "be brief"


async def test_the_export_needs_a_business_key(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(chat_allow_anonymous=True)) as api:
        r = await api.client.get("/account/export")
        assert r.status_code == 401
        key = await api.api_key("empty")
        r = await api.client.get("/account/export", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.content == b""
