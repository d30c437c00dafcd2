"""Waits for confirmations follow the chain's own pace: the audit's Hardhat run (one block a
second) saw 3 confirmations arrive in 2 s while the buyback waited 48 s on a 12 s guess. The
wait is now (missing blocks) x (the block time the chain's recent timestamps show)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from arq import Retry

from app.treasury.runner import Wait
from jobs import treasury_tasks
from jobs.treasury_tasks import check_buyback_threshold
from tests.treasury.conftest import treasury_app

DEPTH = 3


def blocks_every(tester: Any, seconds: int, n: int) -> None:
    """``n`` blocks ``seconds`` apart (block timestamps, as a chain producing them would)."""
    # An hour ahead of the clock first, so a mined block's timestamp is its parent's + 1
    # (eth-tester takes max(parent + 1, now)) and a time travel is never refused.
    tester.time_travel(int(time.time()) + 3600)
    for _ in range(n):
        if seconds == 1:
            tester.mine_blocks(1)
        else:
            # time_travel(T) mines a block at T - 1 (eth-tester)
            tester.time_travel(tester.get_block_by_number("latest")["timestamp"] + seconds + 1)


async def test_one_second_blocks_wait_about_two_seconds_for_two_blocks(
        treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    async with treasury_app(treasury_settings(confirmations=DEPTH), devnet_layout, operator) as t:
        blocks_every(t.tester, 1, 25)
        await t.add_revenue("150")
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None
        with pytest.raises(Retry) as retried:  # the worker's own task: approve + swap mined
            await treasury_tasks.run_buyback({"app": t.ctx, "job_try": 1}, bid)
        defer_s = float(retried.value.defer_score or 0) / 1000
        print(f"\nMEASURE 1 s blocks, 2 confirmations missing: the worker defers {defer_s:.2f}s "
              "(was 24 s on the 12 s guess)")
        assert defer_s == pytest.approx(2.0, abs=0.05)


async def test_twelve_second_blocks_wait_about_twenty_four_seconds(
        treasury_settings, devnet_layout, operator) -> None:  # type: ignore[no-untyped-def]
    async with treasury_app(treasury_settings(confirmations=DEPTH), devnet_layout, operator) as t:
        blocks_every(t.tester, 12, 25)
        await t.add_revenue("150")
        bid = await check_buyback_threshold({"app": t.ctx})
        assert bid is not None
        with pytest.raises(Wait) as waited:
            await t.run(bid)
        # the last 20 blocks: mostly 12 s apart, then the buyback's own (mined at once, 1 s)
        assert waited.value.reason == "confirmations: the swaps needs 2 more block(s)"
        assert 2 * 10 <= waited.value.seconds <= 2 * 12
