"""Chat when CHAT_PRICE_PER_1K_TOKENS_USD is set: held at submission through SQLAlchemy (also on
PostgreSQL), charged on completion by the hot path's batch statement (PostgreSQL) or the
SQLAlchemy step (SQLite), booked as revenue from source `chat`; anonymous chat refused. Unpriced
chat (the default) writes no ledger entry at all."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import func, select

from app.accounts.ledger import price_of
from app.models import ChatJob, LedgerEntry, RevenueEvent
from app.tokens import count_now
from tests.accounts.ledger_support import (balance, business_of, check_invariants, count_entries,
                                    entries, key_id_of)
from tests.openai_api.support import MODEL, Miner
from tests.support.harness import running_app

PRICE = Decimal("0.01")  # USD per 1000 output tokens
PRICED = dict(chat_price_per_1k_tokens_usd=PRICE, chat_hold_max_tokens=100)
HOLD = Decimal("0.001000")  # CHAT_HOLD_MAX_TOKENS (100) x 0.01 / 1000
ANSWER = "Bonjour! Our shop opens at nine and closes at six, every day but Sunday."


async def _job(api, job_id: str) -> ChatJob:  # type: ignore[no-untyped-def]
    async with api.ctx.db.sessions() as s:
        return await s.get(ChatJob, job_id)


async def test_priced_chat_end_to_end_with_a_miner(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db, **PRICED)) as api:
        key = await api.api_key("shop", "chat", funds=Decimal("1"))
        business = await business_of(api, key)
        miner = await api.miner()
        r = await api.chat(key, "When do you open?")
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        row = await _job(api, job_id)
        assert (row.hold_usd, row.api_key_id) == (HOLD, await key_id_of(api, key))
        assert await balance(api, business) == Decimal(1) - HOLD

        job = await miner.next_job(wait=2)
        assert job["job_id"] == job_id
        r = await miner.post_result(job, ANSWER, tokens=999)
        assert r.status_code == 200, r.text
        tokens = count_now(api.settings.tokenizer, ANSWER)
        assert 0 < tokens < 100
        charge = price_of(tokens, PRICE)
        assert await entries(api, "chat", job_id) == {
            "hold": (-HOLD, 100), "release": (HOLD, None), "charge": (-charge, tokens)}
        assert await balance(api, business) == Decimal(1) - charge
        async with api.ctx.db.sessions() as s:
            [event] = (await s.execute(select(RevenueEvent))).scalars().all()
            charge_id = (await s.execute(select(LedgerEntry.id).where(
                LedgerEntry.kind == "charge"))).scalar_one()
        assert (event.source, event.amount_usd, event.output_tokens, event.idle_job_id,
                event.ledger_entry_id) == ("chat", charge, tokens, None, charge_id)
        # the same result again: no second charge
        again = await miner.post_result(job, ANSWER, tokens=999)
        assert again.status_code == 200
        assert len(await entries(api, "chat", job_id)) == 3
        await check_invariants(api)


async def test_a_v1_request_holds_its_max_tokens(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db, **PRICED)) as api:
        key = await api.api_key("shop", "chat", funds=Decimal("1"))
        miner = Miner(await api.miner(), MODEL)
        await miner.poll(0)  # declares the model

        async def answer() -> None:
            job = await miner.poll(5)
            assert job is not None
            await miner.finish(job, " ".join(["word"] * 80))  # more than max_tokens

        asked, _ = await asyncio.gather(api.client.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
            json={"model": MODEL, "max_tokens": 20,
                  "messages": [{"role": "user", "content": "Say word, a lot."}]}), answer())
        assert asked.status_code == 200, asked.text
        job_id = asked.json()["id"].removeprefix("chatcmpl-")
        held = price_of(20, PRICE)
        # the answer is counted up to max_tokens: charged the whole hold, nothing more
        assert await entries(api, "chat", job_id) == {
            "hold": (-held, 20), "release": (held, None), "charge": (-held, 20)}
        assert (await _job(api, job_id)).api_key_id == await key_id_of(api, key)
        await check_invariants(api)


async def test_priced_chat_refuses_what_it_cannot_bill(any_db, settings_factory):  # type: ignore[no-untyped-def]
    """No key: 401 api_key_required (an anonymous caller has no balance to hold on). A balance
    short of the hold: 402. Neither queues or writes anything."""
    settings = settings_factory(any_db, chat_allow_anonymous=True, **PRICED)
    async with running_app(settings) as api:
        r = await api.chat(None, "hello")
        assert r.status_code == 401 and r.json()["error"] == "api_key_required", r.text
        key = await api.api_key("shop", "chat", funds=Decimal("0.000999"))
        r = await api.chat(key, "hello")
        assert r.status_code == 402, r.text
        assert (r.json()["error"], r.json()["balance_usd"], r.json()["required_usd"]) == (
            "insufficient_balance", "0.000999", "0.001000")
        assert await api.ctx.queue.depth("chat") == 0
        async with api.ctx.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(ChatJob))).scalar_one() == 0
        assert await count_entries(api) == 1  # the top-up
        await check_invariants(api)


async def test_a_failed_chat_releases_its_hold(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db, max_attempts=1, **PRICED)) as api:
        key = await api.api_key("shop", "chat", funds=Decimal("1"))
        business = await business_of(api, key)
        miner = await api.miner()
        job_id = (await api.chat(key, "hello")).json()["job_id"]
        job = await miner.next_job(wait=2)
        r = await miner.client.post(f"/job/{job_id}/release", headers=miner.auth,
                                    json={"lease_id": job["lease_id"], "reason": "oom"})
        assert r.status_code == 200 and r.json()["status"] == "failed", r.text
        assert await entries(api, "chat", job_id) == {"hold": (-HOLD, 100),
                                                      "release": (HOLD, None)}
        assert await balance(api, business) == Decimal(1)
        await check_invariants(api)


async def test_unpriced_chat_is_unchanged(any_db, settings_factory):  # type: ignore[no-untyped-def]
    """The default: no hold, no charge, no revenue, anonymous chat as before; the key that
    submitted is recorded all the same (usage by key), on the hot path too."""
    async with running_app(settings_factory(any_db, chat_allow_anonymous=True)) as api:
        key = await api.api_key("shop", "chat", funds=Decimal(0))
        miner = await api.miner()
        job_id = (await api.chat(key, "hello")).json()["job_id"]
        anonymous = await api.chat(None, "hello")
        assert anonymous.status_code == 202, anonymous.text
        for _ in range(2):
            job = await miner.next_job(wait=2)
            assert (await miner.post_result(job, ANSWER)).status_code == 200
        row = await _job(api, job_id)
        assert (row.status, row.hold_usd, row.api_key_id) == (
            "completed", None, await key_id_of(api, key))
        assert (await _job(api, anonymous.json()["job_id"])).api_key_id is None
        assert await count_entries(api) == 0
        async with api.ctx.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(RevenueEvent))
                    ).scalar_one() == 0


async def test_a_hold_made_while_priced_is_charged_after_chat_stops_being_priced(
        any_db, settings_factory):  # type: ignore[no-untyped-def]
    # The operator sets CHAT_PRICE_PER_1K_TOKENS_USD to 0 (a restart) while a priced job is
    # leased: its result still settles the hold it made, with the charge it was held for.
    async with running_app(settings_factory(any_db, **PRICED)) as api:
        key = await api.api_key("shop", "chat", funds=Decimal("1"))
        business = await business_of(api, key)
        miner = await api.miner()
        job_id = (await api.chat(key, "When do you open?")).json()["job_id"]
        job = await miner.next_job(wait=2)
        assert job["job_id"] == job_id
        api.ctx.settings = api.ctx.settings.model_copy(
            update={"chat_price_per_1k_tokens_usd": Decimal(0)})
        r = await miner.post_result(job, ANSWER, tokens=999)
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        tokens = count_now(api.settings.tokenizer, ANSWER)
        charge = price_of(tokens, PRICE)
        assert await entries(api, "chat", job_id) == {
            "hold": (-HOLD, 100), "release": (HOLD, None), "charge": (-charge, tokens)}
        assert await balance(api, business) == Decimal(1) - charge
        row = await _job(api, job_id)
        assert (row.status, row.response) == ("completed", ANSWER)
        await check_invariants(api)
