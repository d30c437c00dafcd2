"""DELETE /businesses/{id} (issue 19): an operator removes a business. Its keys answer 401 at
once, its jobs in flight are cancelled with their holds released, its chat and idle content is
found nowhere (database dump, Redis), its ledger stays whole; idempotent; 404 unknown; another
business is untouched. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from app.accounts import erasure, ledger
from app.models import Business, ChatJob, IdleJob, LedgerEntry
from tests.accounts.erasure_support import database_dump, redis_dump
from tests.support.harness import FUNDS
from tests.idle.support import auth, new_operator, operator_token, submit
from tests.support.harness import running_app

pytestmark = pytest.mark.timeout(120)


async def test_removing_a_business_revokes_cancels_and_erases(any_db, settings_factory):  # type: ignore[no-untyped-def]
    m, k = f"MARK{uuid.uuid4().hex}", f"KEEP{uuid.uuid4().hex}"
    operator = new_operator()
    settings = settings_factory(any_db, operator_addresses=[operator.address])
    async with running_app(settings) as api:
        token = await operator_token(api.client, operator)
        key, spare = await api.api_key("doomed", "chat,idle"), await api.api_key("doomed")
        other = await api.api_key("stays")
        miner = await api.miner()
        for i in range(2):  # answered
            r = await api.chat(key, f"hello {i} {m}", session_id=f"s-{m}", context=f"ctx {m}")
            job = await miner.next_job(wait=2)
            assert job is not None and (await miner.post_result(job, f"hi {m}")).status_code == 200
        r = await api.chat(key, f"in flight {m}", session_id="s2")
        leased = await miner.next_job(wait=2)
        assert leased is not None and leased["job_id"] == r.json()["job_id"]
        queued = (await api.chat(key, f"queued {m}", session_id="s2")).json()["job_id"]
        idle = await submit(api, key, prompt=f"idle {m}")
        kept = (await api.chat(other, f"kept {k}", session_id=f"s-{m[:8]}")).json()["job_id"]
        async with api.ctx.db.transaction() as s:
            doomed = (await s.execute(select(Business.id).where(Business.name == "doomed"))
                      ).scalar_one()
            await ledger.credit(s, doomed, Decimal("5"), reference="inv-1", actor="test")
            await s.execute(update(Business).where(Business.id == doomed).values(
                contact_email=f"{m}@example.com", contact_phone=f"+1 555 {m[-6:]}"))
            await ledger.hold(s, doomed, ledger.JobRef("chat", leased["job_id"]), Decimal("1"),
                              tokens=200, price_per_1k_usd=Decimal(5), api_key_id=None)
        assert m in database_dump(any_db)

        # only operators; unknown or malformed ids are 404
        r = await api.client.delete(f"/businesses/{doomed}", headers=miner.auth)
        assert r.status_code == 403
        for bad in ("999999", "abc", "1" * 12):
            r = await api.client.delete(f"/businesses/{bad}", headers=auth(token))
            assert r.status_code == 404 and r.json()["error"] == "business_not_found"

        r = await api.client.delete(f"/businesses/{doomed}", headers=auth(token))
        assert r.status_code == 200, r.text
        removed = r.json()
        assert removed["keys_revoked"] == 2
        e = removed["erasure"]
        assert (e["scope"], e["actor"], e["jobs"], e["cancelled"]) == (
            "business", operator.address, 5, 3)  # 4 chat + 1 idle; in flight, queued, idle
        assert e["messages"] == 6  # 2 x (user, assistant) + 2 unanswered

        for k_ in (key, spare):  # the keys are dead at once
            r = await api.chat(k_, "anyone there?")
            assert r.status_code == 401 and r.json()["error"] == "api_key_revoked"
        assert (await api.chat(other, "still here")).status_code == 202
        r = await api.client.post("/api-keys", json={"business": "doomed"}, headers=auth(token))
        assert r.status_code == 409 and r.json()["error"] == "business_removed"  # no way back
        late = await miner.post_result(leased, f"late {m}")
        assert late.status_code == 409 and late.json()["error"] == "job_failed"

        # idempotent: the same removal, nothing more revoked or erased
        again = (await api.client.delete(f"/businesses/{doomed}", headers=auth(token))).json()
        assert again["removed_at"] == removed["removed_at"] and again["keys_revoked"] == 0
        assert again["erasure"] == removed["erasure"]
        r = await api.client.get(f"/businesses/{doomed}/erasures", headers=auth(token))
        assert [x["id"] for x in r.json()["erasures"]] == [e["id"]]

        async with api.ctx.db.sessions() as s:
            statuses = dict((await s.execute(select(ChatJob.id, ChatJob.failure_reason).where(
                ChatJob.id.in_([leased["job_id"], queued])))).all())
            idle_job = await s.get(IdleJob, int(idle["job_id"]))
            entries = (await s.execute(select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.business_id == doomed))).scalar_one()
            business = await s.get(Business, doomed)
            balance, total = business.balance_usd, await ledger.sum_of_entries(s, doomed)
            kept_job = await s.get(ChatJob, kept)
        assert statuses == {leased["job_id"]: "erased", queued: "erased"}
        assert (idle_job.status, idle_job.prompt, idle_job.failure_reason) == ("failed", "",
                                                                              "erased")
        # the harness's top-up and ours, two holds (the idle job's own, the chat one made
        # here), two releases: the ledger is whole and every hold came back
        assert entries == 6
        assert balance == total == FUNDS + Decimal("5") and business.removed_at is not None
        assert (business.name, business.contact_email, business.contact_phone) == (
            "doomed", None, None)  # a person's contacts go; the account's name stays
        assert kept_job.prompt == f"kept {k}" and kept_job.erased_at is None
        in_redis = redis_dump(settings.redis_url, settings.redis_prefix)
        assert kept in (await api.ctx.queue.members("chat"))
        assert queued not in (await api.ctx.queue.members("chat"))
        assert idle["job_id"] not in (await api.ctx.queue.members("idle"))

    assert m.encode() not in in_redis
    dump = database_dump(any_db)
    assert m not in dump and k in dump


async def test_a_removal_cut_short_is_finished_by_the_next_call(settings_factory, monkeypatch):  # type: ignore[no-untyped-def]
    operator = new_operator()
    async with running_app(settings_factory(operator_addresses=[operator.address])) as api:
        token = await operator_token(api.client, operator)
        key = await api.api_key("big")
        miner = await api.miner()
        for i in range(5):
            await api.chat(key, f"q{i}", session_id=f"s{i % 2}")
            job = await miner.next_job(wait=2)
            await miner.post_result(job, f"a{i}")
        monkeypatch.setattr(erasure, "BATCH", 2)  # several batches, each its own transaction

        calls = 0
        real = erasure.erase_chat_jobs

        async def crash_on_second_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 3:  # the first is the in-flight pass, then batches of 2
                raise RuntimeError("worker died")
            return await real(*args, **kwargs)
        monkeypatch.setattr(erasure, "erase_chat_jobs", crash_on_second_batch)
        async with api.ctx.db.sessions() as s:
            business = (await s.execute(select(Business.id).where(Business.name == "big"))
                        ).scalar_one()
        with pytest.raises(RuntimeError):
            await erasure.remove_business(api.ctx, business, "0xoperator")
        async with api.ctx.db.sessions() as s:
            left = (await s.execute(select(func.count()).select_from(ChatJob).where(
                ChatJob.erased_at.is_(None)))).scalar_one()
        assert left == 3  # one batch of two was erased before the crash
        monkeypatch.setattr(erasure, "erase_chat_jobs", real)
        r = await api.client.delete(f"/businesses/{business}", headers=auth(token))
        assert r.status_code == 200
        assert (r.json()["erasure"]["jobs"], r.json()["erasure"]["messages"]) == (5, 10)
        async with api.ctx.db.sessions() as s:
            left = (await s.execute(select(func.count()).select_from(ChatJob).where(
                ChatJob.erased_at.is_(None)))).scalar_one()
        assert left == 0
