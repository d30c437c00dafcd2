"""The audit's reorg, Hardhat-style, through the worker's own task (jobs.treasury_tasks.run_buyback,
runner lock and arq Retry included): a burn is mined, the chain reverts two blocks while the
worker sleeps and then grows past CONFIRMATIONS with other blocks. A block number deep enough is
not a receipt: the worker must find the burn gone, re-broadcast its stored signed bytes, and mark
the buyback burned only once that burn is CONFIRMATIONS deep on the chain that is, never leaving a
phantom. Also: a revert after the burn reached the depth but before it was marked burned, and the
same for the swaps before the burn is sized."""

from __future__ import annotations

from typing import Any

import pytest
from arq import Retry

from app.treasury.runner import Wait
from jobs import treasury_tasks
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import DEPTH, TApp, treasury_app


async def _worker_run(t: TApp, bid: int) -> tuple[str | None, float | None]:
    """One try of the worker's job: (final status, None) or (None, the Retry's defer in s)."""
    try:
        return await treasury_tasks.run_buyback({"app": t.ctx, "job_try": 1}, bid), None
    except Retry as retry:
        return None, float(retry.defer_score or 0) / 1000


async def _burns_on_chain(t: TApp, since: int) -> list[dict[str, Any]]:
    return [x for x in await t.treasury_txs(since) if x["kind"] == "burn" and x["status"] == 1]


async def _assert_burned_once_for_real(t: TApp, bid: int, start: int, burn_hash: str) -> None:
    bb = await t.buyback(bid)
    assert bb.status == "burned"
    burns = await _burns_on_chain(t, start)
    assert [b["hash"] for b in burns] == [burn_hash]  # the same signed bytes, mined once
    assert sorted(x["kind"] for x in await t.treasury_txs(start) if x["status"] == 1) == [
        "approve", "burn", "swap"]
    [row] = [r for r in await t.txs(bid) if r.kind == "burn" and r.status == "mined"]
    receipt = await t.w3.eth.get_transaction_receipt(burn_hash)
    assert row.block_number == receipt["blockNumber"]
    assert await t.balance(t.devnet.serv_token, t.devnet.burn_address) >= bb.serv_burned > 0
    body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
    assert body["verified"] is True, body


async def test_a_burn_reverted_while_the_worker_sleeps_is_rebroadcast_never_a_phantom(deep) -> None:  # type: ignore[no-untyped-def]
    t, bid, start = deep
    status, defer = await _worker_run(t, bid)  # approve + swap mined; waits for their depth
    assert status is None and defer is not None
    t.tester.mine_blocks(DEPTH)
    before_burn = t.tester.take_snapshot()
    status, defer = await _worker_run(t, bid)  # the burn is mined; waits for its depth
    assert status is None and (await t.buyback(bid)).status == "burning"
    [burn] = [r for r in await t.txs(bid) if r.kind == "burn"]
    assert burn.status == "mined"
    t.tester.mine_blocks(1)  # 2 confirmations

    # while the worker sleeps: the two blocks are reverted, and the chain grows past the depth
    t.tester.revert_to_snapshot(before_burn)
    assert await _burns_on_chain(t, start) == []
    t.tester.mine_blocks(DEPTH + 2)
    assert await t.w3.eth.block_number - int(burn.block_number) + 1 >= DEPTH  # "deep" by number

    status, defer = await _worker_run(t, bid)
    assert status is None, "marked burned while the chain has no burn: a phantom"
    bb = await t.buyback(bid)
    assert bb.status == "burning"
    assert [r.tx_hash for r in await t.txs(bid) if r.kind == "burn"] == [burn.tx_hash]
    assert [b["hash"] for b in await _burns_on_chain(t, start)] == [burn.tx_hash]  # re-broadcast
    auth = await t.operator_auth()
    events = (await t.api.client.get(f"/buybacks/{bid}", headers=auth)).json()["events"]
    assert any(e["kind"] == "reorg" and burn.tx_hash in e["detail"] for e in events), events

    t.tester.mine_blocks(DEPTH - 1)
    assert await _worker_run(t, bid) == ("burned", None)
    await _assert_burned_once_for_real(t, bid, start, burn.tx_hash)


async def test_a_revert_after_the_burn_reached_its_depth_but_before_burned(deep) -> None:  # type: ignore[no-untyped-def]
    """The last re-read, right before `burned`, sees a reorg that happened after the depth
    check (here: at the runner's checkpoint between the two)."""
    t, bid, start = deep
    with pytest.raises(Wait):
        await t.run(bid)
    t.tester.mine_blocks(DEPTH)
    before_burn = t.tester.take_snapshot()
    with pytest.raises(Wait):
        await t.run(bid)
    [burn] = [r for r in await t.txs(bid) if r.kind == "burn"]
    t.tester.mine_blocks(DEPTH)  # the burn is deep enough now
    reorged: list[int] = []

    async def reorg_once(name: str) -> None:
        if name == "burn:deep" and not reorged:
            t.tester.revert_to_snapshot(before_burn)
            t.tester.mine_blocks(DEPTH + 2)
            reorged.append(await t.w3.eth.block_number)

    with pytest.raises(Wait) as waited:  # re-broadcast, and waiting for its depth again
        await t.run(bid, checkpoint=reorg_once)
    assert reorged, "the run never reached the depth"
    assert waited.value.reason.startswith("confirmations: the burn")
    assert (await t.buyback(bid)).status == "burning"
    assert [b["hash"] for b in await _burns_on_chain(t, start)] == [burn.tx_hash]
    t.tester.mine_blocks(DEPTH)
    assert await t.run(bid) == "burned"
    await _assert_burned_once_for_real(t, bid, start, burn.tx_hash)


async def test_swaps_reverted_after_their_depth_are_rebroadcast_before_the_burn(deep) -> None:  # type: ignore[no-untyped-def]
    """The swaps' confirmation check re-reads their receipts too: a chain that reverted them and
    grew past the depth is not taken for their confirmations."""
    t, bid, start = deep
    snapshot = t.tester.take_snapshot()
    with pytest.raises(Wait):
        await t.run(bid)  # approve + swap mined
    first = {r.kind: r.tx_hash for r in await t.txs(bid)}
    t.tester.revert_to_snapshot(snapshot)
    t.tester.mine_blocks(DEPTH + 2)
    with pytest.raises(Wait) as waited:
        await t.run(bid)
    assert waited.value.reason.startswith("confirmations: the swaps")
    assert (await t.buyback(bid)).status == "swapped"  # re-counted, not burning yet
    assert {r.kind: r.tx_hash for r in await t.txs(bid)} == first  # the same bytes, no new ones
    t.tester.mine_blocks(DEPTH)
    with pytest.raises(Wait):
        await t.run(bid)
    [burn] = [r for r in await t.txs(bid) if r.kind == "burn"]
    t.tester.mine_blocks(DEPTH)
    assert await t.run(bid) == "burned"
    await _assert_burned_once_for_real(t, bid, start, burn.tx_hash)


async def test_a_burn_reorged_after_burned_keeps_its_nonce_the_next_buyback_takes_the_next(
        treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    """The audit's aftermath: a reorg deeper than CONFIRMATIONS (here 1) drops a burn already
    marked burned. The next buyback's first transaction must not take that burn's nonce (the
    stored burn could then never be mined and its $SERV would stay in the treasury): the
    sender re-broadcasts the stored burn and signs the next nonce."""
    async with treasury_app(treasury_settings(), devnet_layout, operator) as t:
        start = await t.w3.eth.block_number
        await t.add_revenue("150")
        first = await check_buyback_threshold({"app": t.ctx})
        assert first is not None
        snapshots: list[int] = []

        async def before_burn(name: str) -> None:
            if name == "burn:prepared":  # committed, not yet broadcast
                snapshots.append(t.tester.take_snapshot())

        assert await t.run(first, checkpoint=before_burn) == "burned"
        [burn] = [r for r in await t.txs(first) if r.kind == "burn"]
        t.tester.revert_to_snapshot(snapshots[0])
        assert await _burns_on_chain(t, start) == []

        await t.add_revenue("100")
        second = await check_buyback_threshold({"app": t.ctx})
        assert second is not None
        assert await t.run(second) == "burned"
        on_chain = {x["hash"]: x for x in await t.treasury_txs(start)}
        assert burn.tx_hash in on_chain and on_chain[burn.tx_hash]["status"] == 1
        assert min(r.nonce for r in await t.txs(second)) == burn.nonce + 1
        for bid in (first, second):
            body = (await t.api.client.get(f"/burns/{bid}/verify")).json()
            assert body["verified"] is True, body


def _front_run_after_snapshot(t: TApp, snapshots: list[int]):  # type: ignore[no-untyped-def]
    """At swap:prepared: a snapshot, then someone's big buy lands first, so our swap reverts
    (INSUFFICIENT_OUTPUT_AMOUNT). Reverting to the snapshot is a reorg that drops both."""
    from eth_account import Account

    from chain.dex import swap
    from chain.tx import TxSender

    d = t.devnet
    trader = TxSender(t.w3, Account.from_key(d.trader_key), max_fee_wei=1000 * 10**9,
                      poll_interval=0.01)

    async def checkpoint(name: str) -> None:
        if name == "swap:prepared" and not snapshots:
            snapshots.append(t.tester.take_snapshot())
            await swap(trader, t.ctx.treasury.router, 50_000 * 10**6, [d.quote_token, d.serv_token],
                       max_slippage_bps=9_999, max_price_impact_bps=9_999)

    return checkpoint


async def test_a_swap_revert_fails_the_buyback_only_once_the_revert_is_final(deep) -> None:  # type: ignore[no-untyped-def]
    t, bid, start = deep
    snapshots: list[int] = []
    with pytest.raises(Wait) as waited:  # reverted at depth 1: not failed yet
        await t.run(bid, checkpoint=_front_run_after_snapshot(t, snapshots))
    assert waited.value.reason == f"confirmations: the reverted swap needs {DEPTH - 1} more block(s)"
    bb = await t.buyback(bid)
    assert bb.status == "swapping" and bb.active_slot == 1
    assert all(e.buyback_id == bid for e in await t.events())  # the revenue is still claimed
    r = await t.api.client.post(f"/buybacks/{bid}/cancel", headers=await t.operator_auth())
    assert r.status_code == 409 and "could still mine it" in r.json()["detail"], r.json()
    t.tester.mine_blocks(DEPTH - 1)
    assert await t.run(bid) == "failed"
    bb = await t.buyback(bid)
    assert "SlippageExceeded" in (bb.failure_reason or "") and bb.active_slot is None
    assert all(e.buyback_id is None for e in await t.events())


async def test_a_reverted_swap_a_reorg_takes_away_is_rebroadcast_and_the_buyback_goes_on(deep) -> None:  # type: ignore[no-untyped-def]
    """Failing at depth 1 would have released the revenue while the same signed swap could
    still be mined, successfully, on the chain after the reorg (a node re-injects the
    transactions of orphaned blocks): stablecoin spent, revenue spent again by the next
    buyback, the $SERV never burned."""
    t, bid, start = deep
    snapshots: list[int] = []
    with pytest.raises(Wait):
        await t.run(bid, checkpoint=_front_run_after_snapshot(t, snapshots))
    [swap_row] = [r for r in await t.txs(bid) if r.kind == "swap"]
    assert swap_row.status == "reverted"
    t.tester.revert_to_snapshot(snapshots[0])  # neither the front-run nor our revert happened
    with pytest.raises(Wait) as waited:
        await t.run(bid)
    assert waited.value.reason.startswith("confirmations: the swaps")
    assert [(r.tx_hash, r.status) for r in await t.txs(bid) if r.kind == "swap"] == [
        (swap_row.tx_hash, "mined")]  # the same signed bytes, mined this time
    t.tester.mine_blocks(DEPTH)
    with pytest.raises(Wait):
        await t.run(bid)
    [burn] = [r for r in await t.txs(bid) if r.kind == "burn"]
    t.tester.mine_blocks(DEPTH)
    assert await t.run(bid) == "burned"
    await _assert_burned_once_for_real(t, bid, start, burn.tx_hash)
