"""The judging's common writes on PostgreSQL's driver (app/trust/pg.py) leave what the ORM code
they stand in for leaves: a passed check moves a wallet's record and graduates it exactly as
reputation.record does, and a verification copy has the same job and the same turns as
checkjobs.copy."""

from __future__ import annotations

from sqlalchemy import select

from app.db import PgUnit
from app.models import ChatJob, ChatLog, Miner, TrustCheck, utcnow
from app.trust import checkjobs, reputation
from tests.support.harness import running_app
from tests.trust.support import answer_next, job_row, miner_row, trust_settings


async def test_a_passed_check_on_the_driver_is_what_record_writes(settings_factory,
                                                                   postgres_db) -> None:  # type: ignore[no-untyped-def]
    settings = trust_settings(settings_factory, postgres_db, probation_jobs=3,
                              reputation_fail_weight=1.0)  # one failure: no suspension
    async with running_app(settings) as api:
        c = api.ctx
        orm_wallet, driver_wallet = await api.miner(), await api.miner()
        ids = [(await miner_row(api, m)).id for m in (orm_wallet, driver_wallet)]
        # a failure first (ORM for both: the driver path records passes only), then passes:
        # probation is served again after it, and graduation comes at the third pass
        steps = [("verify", False, None), ("canary", True, 0.9), ("verify", True, 0.8),
                 ("rescore", True, None), ("verify", True, 1.0)]
        for n, (kind, passed, similarity) in enumerate(steps):
            now = utcnow()
            async with c.db.transaction() as session:
                orm = await reputation.record(session, c, miner_id=ids[0], kind=kind,
                                              passed=passed, job_id=f"j{n}", now=now,
                                              similarity=similarity)
            if passed:
                async with c.db.fast() as unit:
                    assert isinstance(unit, PgUnit) and unit.conn is not None
                    driver = await reputation.record_passed(unit.conn, c, miner_id=ids[1],
                                                            kind=kind, job_id=f"j{n}", now=now,
                                                            similarity=similarity)
            else:
                async with c.db.transaction() as session:
                    driver = await reputation.record(session, c, miner_id=ids[1], kind=kind,
                                                     passed=False, job_id=f"j{n}", now=now)
            assert (driver.score, driver.graduated) == (orm.score, orm.graduated), n
            assert driver.graduated == (n == 3)  # by its third pass since the failure
        rows = [await miner_row(api, m) for m in (orm_wallet, driver_wallet)]
        for column in ("rep_passed", "rep_failed", "checks_passed", "checks_failed",
                       "job_count", "tokens_generated"):
            assert getattr(rows[0], column) == getattr(rows[1], column), column
        assert rows[0].graduated_at is not None and rows[1].graduated_at is not None
        async with c.db.sessions() as s:
            checks = [(await s.execute(select(TrustCheck.kind, TrustCheck.passed,
                                              TrustCheck.job_id, TrustCheck.weight,
                                              TrustCheck.similarity, TrustCheck.tokens_forfeited)
                                       .where(TrustCheck.miner_id == i)
                                       .order_by(TrustCheck.id))).all() for i in ids]
        assert checks[0] == checks[1] and len(checks[0]) == len(steps)


async def test_a_copy_on_the_driver_is_what_copy_writes(settings_factory, postgres_db) -> None:  # type: ignore[no-untyped-def]
    settings = trust_settings(settings_factory, postgres_db, chat_history_limit=2)
    async with running_app(settings) as api:
        c = api.ctx
        key = await api.api_key("acme")
        a = await api.miner()
        first = (await api.chat(key, "When do you open?", context="Shop: Acme")).json()
        await answer_next(a, "We open at 9.")
        await api.chat(key, "And on Sunday?", session_id=first["session_id"])
        await answer_next(a, "Closed.")
        job_id = (await api.chat(key, "And on Saturday?", session_id=first["session_id"],
                                 )).json()["job_id"]
        await answer_next(a, "At 10.")
        origin = await job_row(api, job_id)
        miner_id = (await miner_row(api, a)).id
        now = utcnow()
        async with c.db.transaction() as session:
            by_orm = await checkjobs.copy(session, c, origin, check_model="m", exclude=miner_id,
                                          now=now, push=False)
        async with c.db.fast() as unit:
            assert isinstance(unit, PgUnit)
            by_driver = await checkjobs.copy_on_driver(unit, c, job_id, check_model="m",
                                                       exclude=miner_id, now=now)
            assert await checkjobs.copy_on_driver(unit, c, "no-such-job", check_model="m",
                                                  exclude=None, now=now) is None
        assert by_driver is not None
        copies = [await job_row(api, i) for i in (by_orm, by_driver)]
        same = ("business_id", "prompt", "context", "status", "attempts", "created_at", "model",
                "options", "purpose", "origin_job_id", "check_model", "returned_by",
                "returned_at", "canary_id")
        for column in same:
            assert getattr(copies[0], column) == getattr(copies[1], column), column
        assert copies[1].returned_by == miner_id and copies[1].origin_job_id == job_id
        assert copies[0].session_id != copies[1].session_id != origin.session_id
        async with c.db.sessions() as s:
            turns = [(await s.execute(select(ChatLog.role, ChatLog.message, ChatLog.business_id,
                                             ChatLog.timestamp, ChatLog.job_id.is_not(None))
                                      .where(ChatLog.session_id == j.session_id)
                                      .order_by(ChatLog.id))).all() for j in copies]
        # the last two turns before its prompt (the history limit), oldest first, then the prompt
        assert [t.message for t in turns[1]] == ["And on Sunday?", "Closed.", "And on Saturday?"]
        assert turns[0] == turns[1]
        # its after-commit step ran: the answering wallet may not take its own answer's check
        assert await c.redis.hget(checkjobs.excluded_key(c), by_driver) in (str(miner_id),
                                                                            str(miner_id).encode())
