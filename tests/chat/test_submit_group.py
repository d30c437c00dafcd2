"""Group commit of chat submissions on PostgreSQL (issue 20, app/chat/group.py): concurrent
submissions of one API process are written by one statement, and each request still gets its
own answer: sessions scoped per business, an anonymous caller's chosen id refused (403), a
session claimed by a concurrent transaction retried, a bad row failing alone."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.chat import group
from app.chat.group import Row
from app.models import ChatJob, ChatLog, utcnow
from tests.support.harness import running_app


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _group(api) -> group.Group:  # type: ignore[no-untyped-def]
    s = api.ctx.settings
    return group.of(api.ctx.db, s.chat_submit_group_max, s.chat_submit_group_window_ms)


def _row(session_id: str, business_id: int | None = None, *, may_claim: bool = True,
         prompt: str = "hi", job_id: str | None = None) -> Row:
    return Row(job_id=job_id or str(uuid.uuid4()), business_id=business_id,
               session_id=session_id, may_claim=may_claim, prompt=prompt, context=None,
               now=utcnow())


@contextlib.asynccontextmanager
async def _inserted_uncommitted(postgres_db: str, session_id: str,
                                business: int) -> AsyncIterator[Any]:
    """Another connection inserts the session in a transaction it leaves open; the caller
    commits it (the transaction it is given) when the race is set up."""
    other = await asyncpg.connect(_dsn(postgres_db))
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("INSERT INTO chat_sessions (session_id, business_id, created_at)"
                            " VALUES ($2, $1, now())", business, session_id)
        yield tx
    finally:
        await other.close()


async def _business_id(api, key: str) -> int:  # type: ignore[no-untyped-def]
    r = await api.chat(key, "who am I")
    assert r.status_code == 202
    async with api.ctx.db.sessions() as s:
        return (await s.get(ChatJob, r.json()["job_id"])).business_id  # type: ignore[union-attr]


async def test_concurrent_submissions_share_one_statement_each_with_its_own_answer(  # type: ignore[no-untyped-def]
        postgres_db, settings_factory):
    settings = settings_factory(postgres_db, chat_allow_anonymous=True,
                                chat_submit_group_max=64, chat_submit_group_window_ms=300)
    async with running_app(settings) as api:
        a, b = await api.api_key("alpha"), await api.api_key("beta")
        anon_session = (await api.chat(None, "hello")).json()["session_id"]
        g = _group(api)
        before = (g.stats.statements, g.stats.rows)
        asks = ([(a, "A: first of a new session", "new-s")] * 2
                + [(b, "B: same name, its own session", "new-s"),
                   (None, "anon choosing an id", "chosen-by-anon"),
                   (None, "anon continuing", anon_session),
                   (None, "anon fresh", None)]
                + [(a, f"A{i}", f"a-{i}") for i in range(10)])
        answers = await asyncio.gather(*(api.chat(key, text, **({"session_id": sid} if sid
                                                                 else {}))
                                         for key, text, sid in asks))
        codes = [r.status_code for r in answers]
        assert codes[3] == 403 and answers[3].json()["error"] == "session_forbidden"
        assert codes[:3] + codes[4:] == [202] * (len(asks) - 1), [r.text for r in answers]
        assert answers[0].json()["session_id"] == answers[1].json()["session_id"] == "new-s"
        assert answers[4].json()["session_id"] == anon_session
        statements, rows = g.stats.statements - before[0], g.stats.rows - before[1]
        # every row of the 16 went in a statement (the refused one too), in far fewer of them
        assert rows >= len(asks)
        assert statements <= 4, g.stats
        assert g.stats.largest >= 8, g.stats
        # each written once, its user turn beside it; nothing for the refused one
        async with api.ctx.db.sessions() as s:
            prompts = sorted((await s.execute(select(ChatJob.prompt))).scalars())
            turns = (await s.execute(select(func.count()).select_from(ChatLog)
                                     .where(ChatLog.role == "user"))).scalar()
        assert "anon choosing an id" not in prompts
        assert len(prompts) == turns == len(asks)  # 15 written + the first anonymous "hello"
        # the two businesses' "new-s" are two sessions: each sees only its own turn
        for key, mine in ((a, ["A: first of a new session"] * 2),
                          (b, ["B: same name, its own session"])):
            r = await api.client.get("/chat/sessions/new-s/messages",
                                     headers={"Authorization": f"Bearer {key}"})
            assert [m["message"] for m in r.json()["messages"]] == mine
        # and every written job was queued for the miners
        queued = await api.ctx.redis.llen(api.ctx.queue.key("chat"))
        assert queued == len(asks)  # the first hello + 15 written


async def test_a_session_claimed_by_a_concurrent_transaction_is_retried(  # type: ignore[no-untyped-def]
        postgres_db, settings_factory):
    """Another transaction inserts the session first and commits while the group's statement
    waits on it: that row is not written (its snapshot does not see the session), the request
    runs again and is written; the rest of its group is written the first time."""
    async with running_app(settings_factory(postgres_db, chat_submit_group_max=64)) as api:
        key = await api.api_key("alpha")
        business = await _business_id(api, key)
        async with _inserted_uncommitted(postgres_db, "raced", business) as tx:
            g = _group(api)
            before = g.stats.statements
            sends = [asyncio.create_task(api.chat(key, "racing", session_id="raced")),
                     *(asyncio.create_task(api.chat(key, f"other {i}")) for i in range(3))]
            await asyncio.sleep(0.5)  # the statement waits on the uncommitted session row
            assert not sends[0].done()
            await tx.commit()
            answers = await asyncio.gather(*sends)
        assert [r.status_code for r in answers] == [202] * 4, [r.text for r in answers]
        assert answers[0].json()["session_id"] == "raced"
        assert g.stats.statements - before >= 2  # the raced row went again, on its own

    # the same, one level down: the group's answer for that row is "not written"
    async with running_app(settings_factory(postgres_db, chat_submit_group_max=64)) as api:
        business = await _business_id(api, await api.api_key("beta"))
        async with _inserted_uncommitted(postgres_db, "raced2", business) as tx:
            g = _group(api)
            task = asyncio.create_task(asyncio.wait_for(asyncio.gather(
                g.submit(_row("raced2", business)), g.submit(_row("calm", business))), 10))
            await asyncio.sleep(0.3)
            await tx.commit()
            assert await task == [False, True]
        assert await g.submit(_row("raced2", business)) is True  # the retry sees it


async def test_one_bad_row_fails_alone(postgres_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(postgres_db, chat_submit_group_max=64)) as api:
        business = await _business_id(api, await api.api_key("alpha"))
        async with api.ctx.db.sessions() as s:
            taken = (await s.execute(select(ChatJob.id))).scalar_one()
        g = _group(api)
        before = g.stats.alone
        outcomes = await asyncio.gather(
            g.submit(_row("s1", business)),
            g.submit(_row("s2", business, job_id=taken)),  # an id already used: the row fails
            g.submit(_row("s3", None, may_claim=False)),  # anonymous, unknown session
            g.submit(_row("s4", business)), return_exceptions=True)
        assert outcomes[0] is True and outcomes[3] is True and outcomes[2] is False
        assert isinstance(outcomes[1], asyncpg.UniqueViolationError)
        assert g.stats.alone - before == 4  # the group's statement failed: each went alone


async def test_a_lone_submission_goes_at_once(postgres_db, settings_factory):  # type: ignore[no-untyped-def]
    """No company, no wait: even with a window, a submission after a quiet moment is sent at
    once, as a statement of one row."""
    async with running_app(settings_factory(postgres_db, chat_submit_group_max=64,
                                            chat_submit_group_window_ms=500)) as api:
        key = await api.api_key()
        await api.chat(key, "warm up")
        await asyncio.sleep(0.6)
        g = _group(api)
        before = g.stats.sizes.get(1, 0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await api.chat(key, "alone")).status_code == 202
        assert loop.time() - started < 0.4  # well under the window
        assert g.stats.sizes.get(1, 0) == before + 1


@pytest.mark.parametrize("group_max", [1, 64])
async def test_grouping_off_or_on_writes_the_same(postgres_db, settings_factory, group_max):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(postgres_db,
                                            chat_submit_group_max=group_max)) as api:
        key = await api.api_key()
        answers = await asyncio.gather(*(api.chat(key, f"m{i}", session_id="same")
                                         for i in range(6)))
        assert [r.status_code for r in answers] == [202] * 6
        r = await api.client.get("/chat/sessions/same/messages",
                                 headers={"Authorization": f"Bearer {key}"})
        assert sorted(m["message"] for m in r.json()["messages"]) == [f"m{i}" for i in range(6)]
