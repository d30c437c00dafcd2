"""The room read before a pop is skipped when this process has just seen the wallet with room to
spare (app/leases/room.py); the lease statement still counts the cap, so a stale memory costs a
pop that goes back to the front, never a lease past the cap."""

from __future__ import annotations

from sqlalchemy import select

from app.leases import protocol, room
from app.models import Miner
from tests.leases.test_batch_protocol import batch
from tests.leases.test_lease_limits import leases_of
from tests.support.harness import running_app


def count_reads(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    reads: list[int] = []
    real = protocol.room

    async def counted(c, miner_id):  # type: ignore[no-untyped-def]
        reads.append(miner_id)
        return await real(c, miner_id)

    monkeypatch.setattr(protocol, "room", counted)
    return reads


async def test_an_honest_miner_polling_again_is_not_read_again(settings_factory, postgres_db,
                                                               monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reads = count_reads(monkeypatch)
    async with running_app(settings_factory(postgres_db, miner_max_leases=8)) as api:
        key = await api.api_key()
        m = await api.miner()
        for n in range(3):
            await api.chat(key, f"q{n}")
            job = await m.next_job(wait=0)
            assert job is not None
            assert (await m.post_result(job, "a")).status_code == 200
        assert len(reads) == 1  # the first poll only: then the lease statement's count serves
        # a batch that would fill more than half the cap is read first, as before
        for n in range(6):
            await api.chat(key, f"b{n}")
        assert len(await batch(m, 6)) == 6
        assert len(reads) == 2


async def test_a_stale_memory_never_leases_past_the_cap(settings_factory, postgres_db) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(postgres_db, miner_max_leases=4)) as api:
        key = await api.api_key()
        for n in range(5):
            await api.chat(key, f"q{n}")
        a, b = await api.miner(), await api.miner()
        assert len(await batch(a, 4)) == 4  # at its cap
        async with api.ctx.db.sessions() as s:
            a_id = (await s.execute(select(Miner.id).where(Miner.address == a.address))).scalar()
        room.seen(api.ctx, a_id, 0)  # as if its leases were taken in another process
        r = await a.client.get("/job/next", params={"wait": 0}, headers=a.auth)
        assert r.status_code == 429 and r.json()["error"] == "too_many_leases"
        assert await leases_of(api, a) == 4
        job = await b.next_job(wait=0)  # what a popped went back to the front, attempt unspent
        assert job is not None and job["attempt"] == 1
        # and the refusal taught the process: a's next poll is read first, popping nothing
        r = await a.client.get("/job/next", params={"wait": 0}, headers=a.auth)
        assert r.status_code == 429
