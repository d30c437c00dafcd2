"""DELETE /chat/sessions/{id} (issue 19): after it, a marker written into every place a session's
content lives (prompts, answers, the context, earlier turns a /v1 request brought, a streamed
answer's chunks, a queued job, a job a miner is answering, a verification copy, a feedback
comment) is found nowhere: not in a dump of the database, not in the SQLite file's bytes, not
in Redis; the session's own name only in another business's session of that name. The late answer of the job in flight is refused and stores
nothing; what billing needs stays; other sessions are untouched. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from app.db import is_sqlite
from app.accounts import ledger
from app.models import Business, ChatJob, ChatLog, LedgerEntry, utcnow
from app.trust import checkjobs
from tests.accounts.erasure_support import database_dump, redis_dump, sqlite_file_bytes
from tests.openai_api.support import MODEL, Miner
from tests.support.harness import running_app

pytestmark = pytest.mark.timeout(120)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _v1(api: Any, key: str, session_id: str, messages: list[dict[str, str]],
              marker: str) -> Any:
    return await api.client.post("/v1/chat/completions", headers=_auth(key), json={
        "model": MODEL, "stream": True, "messages": messages, "session_id": session_id,
        "user": f"end-user {marker}", "stop": [f"stop {marker}"]})


async def _history(api: Any, key: str, session_id: str) -> list[dict[str, str]]:
    r = await api.client.get(f"/chat/sessions/{session_id}/messages", headers=_auth(key))
    assert r.status_code == 200, r.text
    return [{"role": m["role"], "content": m["message"]} for m in r.json()["messages"]]


async def test_a_deleted_session_is_found_nowhere(any_db, settings_factory):  # type: ignore[no-untyped-def]
    m = f"MARK{uuid.uuid4().hex}"  # in everything of the erased session
    k = f"KEEP{uuid.uuid4().hex}"  # in what must survive
    n = f"NAME{uuid.uuid4().hex}"
    session_id = f"conv-{n}"  # a name a business chose: it may name a person
    settings = settings_factory(any_db)
    async with running_app(settings) as api:
        a, b, c = (await api.api_key("alpha"), await api.api_key("beta"),
                   await api.api_key("gamma"))
        miner = Miner(await api.miner(), MODEL)
        assert await miner.poll(0) is None  # declares the model

        # a /v1 streamed job that brings earlier turns, answered with a chunk first
        streamed = asyncio.create_task(_v1(api, a, session_id, [
            {"role": "system", "content": f"system {m}"},
            {"role": "user", "content": f"earlier {m}"},
            {"role": "assistant", "content": f"reply {m}"},
            {"role": "user", "content": f"v1 {m}"}], m))
        job_b = await miner.poll(5)
        assert job_b is not None and job_b["stream"] is True
        assert (await miner.chunk(job_b, 0, f"chunk {m}")).status_code == 200
        await miner.finish(job_b, f"chunk {m} done")
        assert (await streamed).status_code == 200

        # a plain chat job with a context, answered, rated with a comment, with an
        # Idempotency-Key
        r = await api.client.post("/chat", headers={**_auth(a), "Idempotency-Key": f"idem-{m}"},
                                  json={"message": f"plain {m}", "session_id": session_id,
                                        "context": f"context {m}"})
        assert r.status_code == 202, r.text
        job_a = await miner.poll(5)
        assert job_a is not None and job_a["job_id"] == r.json()["job_id"]
        assert f"earlier {m}" in [h["content"] for h in job_a["history"]]
        await miner.finish(job_a, f"answer {m}")
        r = await api.client.post(f"/chat/{job_a['job_id']}/feedback", headers=_auth(a),
                                  json={"rating": "down", "comment": f"comment {m}"})
        assert r.status_code == 200, r.text

        # a streamed job a miner is answering when the session is erased
        in_flight = asyncio.create_task(_v1(
            api, a, session_id, [*await _history(api, a, session_id),
                                 {"role": "user", "content": f"in flight {m}"}], m))
        job_d = await miner.poll(5)
        assert job_d is not None and job_d["prompt"] == f"in flight {m}"
        assert (await miner.chunk(job_d, 0, f"partial {m}")).status_code == 200

        # a queued job, a verification copy of the answered one, and what must survive: the
        # same business's other session, another business's session of the same name
        queued = (await api.chat(a, f"queued {m}", session_id=session_id)).json()["job_id"]
        async with api.ctx.db.transaction() as s:
            origin = await s.get(ChatJob, job_a["job_id"])
            copy_id = await checkjobs.copy(s, api.ctx, origin, check_model="", exclude=None,
                                           now=utcnow())
        other = (await api.chat(a, f"other {k}", session_id="other")).json()["job_id"]
        twin = (await api.chat(b, f"beta {k}", session_id=session_id)).json()["job_id"]

        # the in-flight job holds money; the business has a balance
        async with api.ctx.db.transaction() as s:
            business_a = (await s.execute(select(Business.id).where(Business.name == "alpha"))
                          ).scalar_one()
            await ledger.credit(s, business_a, Decimal("10"), reference="t-1", actor="test")
            await ledger.hold(s, business_a, ledger.JobRef("chat", job_d["job_id"]),
                              Decimal("0.5"), tokens=100, price_per_1k_usd=Decimal(5),
                              api_key_id=None)
        async with api.ctx.db.sessions() as s:
            billed = {j.id: (j.output_tokens, j.completed_at, j.business_id, j.status)
                      for j in (await s.execute(select(ChatJob).where(
                          ChatJob.id.in_([job_a["job_id"], job_b["job_id"]])))).scalars()}
        assert await api.ctx.redis.llen(api.ctx.relay._keys(job_d["job_id"])[0]) == 1

        # the scans can see the marker before (else they would prove nothing after)
        assert m in database_dump(any_db) and k in database_dump(any_db)
        assert m.encode() in redis_dump(settings.redis_url, settings.redis_prefix)
        assert database_dump(any_db).count(n) > 3

        # another business cannot erase it (nor learn that it exists)
        r = await api.client.delete(f"/chat/sessions/{session_id}", headers=_auth(c))
        assert r.status_code == 404 and r.json()["error"] == "session_not_found"

        r = await api.client.delete(f"/chat/sessions/{session_id}", headers=_auth(a))
        assert r.status_code == 200, r.text
        erased = r.json()
        assert (erased["jobs"], erased["cancelled"]) == (4, 2)  # b, a, d, queued; d, queued
        assert erased["messages"] == 8  # 2 brought by /v1, 2 x (user, assistant), 2 unanswered
        assert (await in_flight).status_code == 200  # its stream ended (the job failed)

        # the late answer of the cancelled job is refused and stores nothing; so is a chunk
        late = await miner.result(job_d, f"late {m}")
        assert late.status_code == 409 and late.json()["error"] == "job_failed", late.text
        assert "erased" in late.json()["detail"]
        assert (await miner.chunk(job_d, 1, f"late chunk {m}")).status_code == 409
        async with api.ctx.db.sessions() as s:
            jobs = {j.id: j for j in (await s.execute(select(ChatJob))).scalars()}
            turns = (await s.execute(select(ChatLog.job_id, ChatLog.session_id))).all()
            entries = (await s.execute(select(LedgerEntry.kind, LedgerEntry.amount_usd).where(
                LedgerEntry.job_id == job_d["job_id"]))).all()
            balance = await ledger.balance(s, business_a)
        tomb = f"erased#{erased['erasure_id']}"
        for job_id in (job_d["job_id"], queued):
            assert (jobs[job_id].status, jobs[job_id].failure_reason) == ("failed", "erased")
        assert jobs[job_d["job_id"]].response is None and jobs[copy_id].status == "failed"
        for job_id in (job_a["job_id"], job_b["job_id"]):  # billing stays
            j = jobs[job_id]
            assert (j.output_tokens, j.completed_at, j.business_id, j.status) == billed[job_id]
            assert (j.prompt, j.context, j.response, j.options, j.session_id) == (
                "", None, None, None, tomb)
            assert j.erased_at is not None
        assert jobs[other].session_id == "other" and jobs[twin].session_id == session_id
        assert sorted(t.job_id for t in turns if t.job_id) == sorted([other, twin])
        assert sorted(k for k, _ in entries) == ["hold", "release"]  # the hold came back
        assert balance == Decimal("10")
        # the cancelled ones left the queue (the reconciler may have pushed one back in the
        # moment between: an id only, which a miner's lease skips, the job not being queued)
        waiting = await api.ctx.queue.members("chat")
        assert {other, twin} <= waiting
        assert all(jobs[j].status == "failed" for j in waiting - {other, twin})

        # the record: who, what, when; the session only as a hash
        r = await api.client.get("/account/erasures", headers=_auth(a))
        [record] = r.json()["erasures"]
        assert record["scope"] == "session" and record["actor"] == f"key:{a[:10]}"
        assert record["subject_hash"] == hashlib.sha256(session_id.encode()).hexdigest()
        assert (record["jobs"], record["messages"], record["cancelled"]) == (4, 8, 2)
        assert (await api.client.get("/account/erasures", headers=_auth(b))).json() == {
            "erasures": []}

        # the rest is untouched; the session is gone
        assert [t["content"] for t in await _history(api, a, "other")] == [f"other {k}"]
        assert [t["content"] for t in await _history(api, b, session_id)] == [f"beta {k}"]
        r = await api.client.get(f"/chat/sessions/{session_id}/messages", headers=_auth(a))
        assert r.status_code == 404
        r = await api.client.delete(f"/chat/sessions/{session_id}", headers=_auth(a))
        assert r.status_code == 404
        found_in_redis = redis_dump(settings.redis_url, settings.redis_prefix)

    assert m.encode() not in found_in_redis
    dump = database_dump(any_db)
    assert m not in dump and k in dump
    assert dump.count(n) == 3  # only in beta's session of that name: its row, job and turn
    if is_sqlite(any_db):  # not in the file's free pages either (PRAGMA secure_delete)
        raw = sqlite_file_bytes(any_db)
        assert m.encode() not in raw and k.encode() in raw


async def test_anonymous_callers_cannot_erase(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(chat_allow_anonymous=True)) as api:
        anon = (await api.chat(None, "hello")).json()["session_id"]
        r = await api.client.delete(f"/chat/sessions/{anon}")
        assert r.status_code == 401 and r.json()["error"] == "missing_api_key"
        key = await api.api_key()
        r = await api.client.delete(f"/chat/sessions/{anon}", headers=_auth(key))
        assert r.status_code == 404  # an anonymous session is no business's
        r = await api.client.delete("/chat/sessions/bad%20name", headers=_auth(key))
        assert r.status_code == 404
