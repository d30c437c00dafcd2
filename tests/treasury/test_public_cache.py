"""The public chain checks are cheap to call (app/blockcache.py): one computation per block and
per change of the records they read, and a per-IP limit in front of them."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from app import blockcache
from app.models import Buyback
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import TApp


@pytest.fixture(autouse=True)
def head_every_time(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(blockcache, "HEAD_POLL_S", 0.0)  # see a new block at once


def count_rpc(t: TApp, monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """The JSON-RPC methods the app asks the (real, in-process) chain, as they pass."""
    provider, seen = t.w3.provider, []
    real = provider.make_request

    async def counted(method, params):  # type: ignore[no-untyped-def]
        seen.append(method)
        return await real(method, params)
    monkeypatch.setattr(provider, "make_request", counted)
    monkeypatch.setattr(provider, "_request_func_cache", (None, None))  # web3 kept the old one
    return seen


def computed(t: TApp) -> int:
    return t.api.app.state.block_cache.computed  # type: ignore[no-any-return]


async def test_summary_and_verify_are_computed_once_per_block_and_record(tapp: TApp,
                                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    t = tapp
    await t.add_revenue("100")
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid) == "burned"
    rpc = count_rpc(t, monkeypatch)
    for path in ("/burns/summary", f"/burns/{bid}/verify"):
        before = None
        for n in range(5):
            r = await t.api.client.get(path)
            assert r.status_code == 200
            assert before is None or r.content == before
            before = r.content
            if n == 0:
                first, rpc[:] = list(rpc), []
        # after the first answer, each call costs the chain one read of its head, nothing more
        assert len(first) > 1 and rpc == ["eth_getBlockByNumber"] * 4, (first, rpc)
        rpc.clear()
    assert computed(t) == 2  # ten answers, two computations

    t.tester.mine_blocks(1)  # the chain moved on: computed again, for the new block
    summary = (await t.api.client.get("/burns/summary")).json()
    verify = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    assert computed(t) == 4 and verify["verified"] is True
    assert summary["block_number"] == await t.w3.eth.block_number

    # A record that changes without a new block is never answered from the cache.
    bb = await t.buyback(bid)
    async with t.ctx.db.transaction() as session:
        await session.execute(update(Buyback).where(Buyback.id == bid)
                              .values(serv_burned=int(bb.serv_burned or 0) + 1))
    verify = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    summary = (await t.api.client.get("/burns/summary")).json()
    assert verify["verified"] is False and summary["difference"] == "-1"
    assert computed(t) == 6
    # Unknown and malformed ids answer 404 as before, uncached.
    for raw in ("999", "x", "99999999999"):
        assert (await t.api.client.get(f"/burns/{raw}/verify")).status_code == 404


async def test_a_burst_at_a_new_block_is_computed_once(tapp: TApp) -> None:
    t = tapp
    answers = await asyncio.gather(*(t.api.client.get("/burns/summary") for _ in range(20)))
    assert {r.status_code for r in answers} == {200} and len({r.content for r in answers}) == 1
    assert computed(t) == 1 and t.api.app.state.block_cache.flights == {}


async def test_cached_answers_carry_fresh_headers(treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    from tests.treasury.conftest import treasury_app

    settings = treasury_settings(cors_origins="https://a.example,https://b.example")
    async with treasury_app(settings, devnet_layout, operator) as t:
        for origin in ("https://a.example", "https://b.example", "https://a.example"):
            r = await t.api.client.get("/burns/summary", headers={"Origin": origin})
            assert r.status_code == 200
            assert r.headers.get_list("access-control-allow-origin") == [origin]
            assert r.headers["cache-control"] == "public, max-age=30"
        assert computed(t) == 1


async def test_per_ip_limit_in_front_of_the_chain(treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    from tests.treasury.conftest import treasury_app

    settings = treasury_settings(rate_limit_chain_reads_per_min=2)
    async with treasury_app(settings, devnet_layout, operator) as t:
        codes = [(await t.api.client.get(path)).status_code
                 for path in ("/burns/summary", "/burns/1/verify", "/burns/summary")]
        assert codes == [200, 404, 429]
        r = await t.api.client.get("/burns/1/verify")
        assert r.status_code == 429 and 25 <= int(r.headers["retry-after"]) <= 30
        assert computed(t) == 2  # the refused calls reached neither the chain nor the database
        r = await t.api.client.get("/burns/summary", headers={"X-Forwarded-For": "203.0.113.4"})
        assert r.status_code == 200  # another client, its own budget


async def test_a_reorg_that_replaces_the_head_is_a_new_block(tapp: TApp) -> None:
    # The burn's blocks leave the chain and another chain grows to the same height: the head's
    # number is what it was, its hash is not, and the cached "verified" must not be served.
    t = tapp
    await t.add_revenue("100")
    before = t.tester.take_snapshot()
    bid = await check_buyback_threshold({"app": t.ctx})
    assert bid is not None and await t.run(bid) == "burned"
    assert (await t.api.client.get(f"/burns/{bid}/verify")).json()["verified"] is True
    height = await t.w3.eth.block_number
    t.tester.revert_to_snapshot(before)
    t.tester.mine_blocks(height - await t.w3.eth.block_number)
    assert await t.w3.eth.block_number == height
    verify = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    assert verify["verified"] is False, verify
    assert computed(t) == 2
