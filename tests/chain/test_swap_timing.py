"""The swap is priced when it is signed, not before the approve that precedes it."""

from __future__ import annotations

from chain.dex import swap
from tests.chain.conftest import Chain

USD = 10**6
SERV = 10**18


async def test_deadline_counts_from_after_a_slow_approve(chain: Chain) -> None:
    d = chain.devnet
    path = [d.quote_token, d.serv_token]

    async def slow_approve(prepared) -> None:  # noqa: ANN001
        if prepared.tx["to"] == d.quote_token:
            head = await chain.w3.eth.get_block("latest")
            chain.tester.time_travel(head["timestamp"] + 600)  # the approve took 10 minutes

    result = await swap(chain.treasury, chain.router, 1_000 * USD, path, max_slippage_bps=50,
                        max_price_impact_bps=200, deadline_seconds=300, on_prepared=slow_approve)
    assert result.approve_tx_hash is not None and result.received > 0
    mined = await chain.w3.eth.get_block(result.block_number)
    assert mined["timestamp"] < result.deadline <= mined["timestamp"] + 300 + 5


async def test_amount_out_min_comes_from_a_quote_taken_after_the_approve(chain: Chain) -> None:
    d = chain.devnet
    path = [d.quote_token, d.serv_token]

    async def price_moves_during_approve(prepared) -> None:  # noqa: ANN001
        if prepared.tx["to"] == d.quote_token:
            await swap(chain.trader, chain.router, 1_000_000 * SERV, [d.serv_token, d.quote_token],
                       max_slippage_bps=9_999, max_price_impact_bps=9_999)

    result = await swap(chain.treasury, chain.router, 1_000 * USD, path, max_slippage_bps=50,
                        max_price_impact_bps=200, on_prepared=price_moves_during_approve)
    assert result.approve_tx_hash is not None
    # nobody traded between the quote and the swap: the quote is exactly what it paid
    assert result.received == result.quoted_out
    assert result.amount_out_min == result.quoted_out * 9_950 // 10_000
