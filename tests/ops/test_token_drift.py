"""/metrics shows miners whose reported token counts drift above the server's count."""

from __future__ import annotations

from sqlalchemy import select

from app.models import Miner
from app.tokens import count_now
from tests.idle.support import next_idle, post_idle_result, submit
from tests.support.harness import SimMiner, running_app

OUTPUTS = ("It began in 1789.", "x", "three little words")


async def _answer_chats(m: SimMiner, inflate: int) -> None:
    while (job := await m.next_job(wait=0)) is not None:
        out = OUTPUTS[len(m.seen) % len(OUTPUTS)]
        r = await m.post_result(job, out, tokens=count_now("mistral-v1", out) * inflate)
        assert r.status_code == 200, r.text


async def test_a_drifting_miner_shows_up_in_metrics(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        key = await api.api_key(scopes="chat,idle")
        honest, drifter = await api.miner("honest"), await api.miner("drifter")
        empty = (await api.client.get("/metrics")).json()["token_drift"]
        assert (empty["miners_over"], empty["worst"], empty["reported_tokens"]) == (0, [], 0)

        for i in range(3):
            await api.chat(key, f"q{i}")
        await _answer_chats(honest, inflate=1)
        for i in range(3):
            await api.chat(key, f"r{i}")
        await _answer_chats(drifter, inflate=10)
        # an honest idle miner whose output ran past max_tokens: its report is capped like
        # the bill, so it is no drift
        await submit(api, key, max_tokens=3)
        job = await next_idle(honest, wait=2)
        assert (await post_idle_result(honest, job, "It began in 1789.", tokens=9)).status_code == 200

        async with api.ctx.db.sessions() as s:
            address = (await s.execute(select(Miner.address)
                                        .where(Miner.name == "drifter"))).scalar_one()
        d = (await api.client.get("/metrics")).json()["token_drift"]
        counted = 2 * (9 + 1 + 3)  # each miner answered the three outputs once
        assert d["counted_tokens"] == counted + 3 and d["reported_tokens"] == 13 * 11 + 3
        assert d["miners_over"] == 1 and d["over_pct"] == 110
        assert d["worst"] == [{"miner": address, "reported_tokens": 130, "counted_tokens": 13,
                               "jobs": 3}]

        text = (await api.client.get("/metrics", params={"format": "prometheus"})).text
        assert "\nmia_miners_overreporting 1\n" in text
        assert f'mia_miner_output_tokens_reported{{miner="{address}"}} 130\n' in text
        assert f'mia_miner_output_tokens_counted{{miner="{address}"}} 13\n' in text
        assert f"\nmia_output_tokens_counted {counted + 3}\n" in text
