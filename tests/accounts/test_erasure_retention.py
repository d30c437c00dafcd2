"""Retention (issue 19): the worker erases conversation content older than CHAT_RETENTION_DAYS,
or a business's own retention_days (0: kept forever); newer content and content kept forever
stay. One Erasure per business per run; a second run finds nothing. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.db import is_sqlite
from app.accounts import retention
from app.models import (Business, ChatJob, ChatLog, ChatSession, Erasure, IdleJob, JobStatus,
                        utcnow)
from jobs import retention_tasks
from tests.accounts.erasure_support import database_dump, sqlite_file_bytes
from tests.support.harness import running_app

pytestmark = pytest.mark.timeout(120)


async def _age(api, job_ids: list[str], days: float) -> None:  # type: ignore[no-untyped-def]
    """Backdate jobs and their turns by `days`."""
    then = utcnow() - timedelta(days=days)
    async with api.ctx.db.transaction() as s:
        await s.execute(update(ChatJob).where(ChatJob.id.in_(job_ids))
                        .values(created_at=then, completed_at=then))
        await s.execute(update(ChatLog).where(ChatLog.job_id.in_(job_ids)).values(timestamp=then))
        sessions = (await s.execute(select(ChatJob.session_id).where(ChatJob.id.in_(job_ids)))
                    ).scalars().all()
        await s.execute(update(ChatSession).where(ChatSession.session_id.in_(sessions))
                        .values(created_at=then))


async def test_old_content_is_erased_by_the_worker(any_db, settings_factory):  # type: ignore[no-untyped-def]
    old, new = f"OLD{uuid.uuid4().hex}", f"NEW{uuid.uuid4().hex}"
    forever = f"FOREVER{uuid.uuid4().hex}"
    settings = settings_factory(any_db, chat_retention_days=30, chat_allow_anonymous=True,
                                retention_interval_s=3600)
    async with running_app(settings) as api:
        keys = {name: await api.api_key(name) for name in ("default", "week", "keep")}
        async with api.ctx.db.transaction() as s:
            await s.execute(update(Business).where(Business.name == "week")
                            .values(retention_days=7))
            await s.execute(update(Business).where(Business.name == "keep")
                            .values(retention_days=0))
        miner = await api.miner()

        async def answered(key: str | None, message: str, session_id: str | None) -> str:
            r = await api.chat(key, message, **({"session_id": session_id} if session_id else {}))
            job = await miner.next_job(wait=2)
            assert job is not None and job["job_id"] == r.json()["job_id"]
            assert (await miner.post_result(job, f"re: {message}")).status_code == 200
            return job["job_id"]

        old_default = await answered(keys["default"], f"a {old}", f"gone-{old}")
        both = await answered(keys["default"], f"b {old}", "both")
        recent = await answered(keys["default"], f"c {new}", "both")  # same session, newer
        week_old = await answered(keys["week"], f"d {old}", "w")  # 10 days > 7
        week_new = await answered(keys["week"], f"e {new}", "w2")  # 3 days < 7
        kept = await answered(keys["keep"], f"f {forever}", "k")  # a year, kept forever
        anonymous = await answered(None, f"g {old}", None)  # no business: CHAT_RETENTION_DAYS
        await _age(api, [old_default, both, anonymous], 40)
        await _age(api, [week_old], 10)
        await _age(api, [week_new], 3)
        await _age(api, [kept], 365)
        async with api.ctx.db.transaction() as s:
            ids = dict((await s.execute(select(Business.name, Business.id))).all())
            default_id = ids["default"]
            s.add(IdleJob(prompt=f"idle {old}", result=f"idle re {old}", status=JobStatus.completed,
                          business_id=default_id, created_at=utcnow() - timedelta(days=40),
                          completed_at=utcnow() - timedelta(days=40), max_tokens=8,
                          attempts=1, runpod_attempts=0))
        assert old in database_dump(any_db)

        ran = await retention_tasks.erase_expired_content({"app": api.ctx})
        assert ran > 0
        assert await retention_tasks.erase_expired_content({"app": api.ctx}) == 0  # not due
        assert await retention.erase_expired(api.ctx) == []  # nothing left to erase

        async with api.ctx.db.sessions() as s:
            jobs = {j.id: j for j in (await s.execute(select(ChatJob))).scalars()}
            records = (await s.execute(select(Erasure).order_by(Erasure.id))).scalars().all()
            sessions = set((await s.execute(select(ChatSession.session_id))).scalars())
            turns = (await s.execute(select(ChatLog.job_id))).scalars().all()
        for job_id in (old_default, both, week_old, anonymous):
            assert jobs[job_id].erased_at is not None and jobs[job_id].prompt == ""
            assert jobs[job_id].output_tokens is not None  # billing stays
        for job_id in (recent, week_new, kept):
            assert jobs[job_id].erased_at is None and jobs[job_id].response
        assert sorted(turns) == sorted([recent, recent, week_new, week_new, kept, kept])
        assert f"gone-{old}" not in sessions and {"both", "w2", "k"} <= sessions
        assert "w" not in sessions  # nothing of it left
        assert [(r.scope, r.actor, r.business_id, r.jobs) for r in records] == [
            ("retention", "worker", default_id, 3),  # 2 chat + 1 idle
            ("retention", "worker", ids["week"], 1),
            ("retention", "worker", None, 1)]  # anonymous
        assert all(r.before is not None and r.subject_hash is None for r in records)

    dump = database_dump(any_db)
    assert old not in dump and new in dump and forever in dump
    if is_sqlite(any_db):
        raw = sqlite_file_bytes(any_db)
        assert old.encode() not in raw and forever.encode() in raw
