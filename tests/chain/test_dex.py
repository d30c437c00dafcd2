from __future__ import annotations

import pytest
from eth_account import Account

from chain.burn import BURN_ADDRESS
from chain.dex import (
    UniswapV2Router,
    plan_chunks,
    simulate_impact_bps,
    swap,
)
from chain.errors import (
    ContractNotFound,
    DeadlineExpired,
    InsufficientBalance,
    PriceImpactTooHigh,
    SlippageExceeded,
    TxReverted,
)
from chain.tokens import erc20
from chain.tx import NonceStatus, TxStatus
from tests.chain.conftest import Chain

USD = 10**6


async def balances(chain: Chain) -> dict[str, int]:
    d = chain.devnet
    usd, serv = erc20(chain.w3, d.quote_token), erc20(chain.w3, d.serv_token)
    return {
        "treasury_usd": await usd.functions.balanceOf(d.treasury).call(),
        "treasury_serv": await serv.functions.balanceOf(d.treasury).call(),
        "burned": await serv.functions.balanceOf(BURN_ADDRESS).call(),
    }


async def trader_buys(chain: Chain, usd_amount: int) -> None:
    d = chain.devnet
    await swap(chain.trader, chain.router, usd_amount, [d.quote_token, d.serv_token],
               max_slippage_bps=10_000 - 1, max_price_impact_bps=9_999)


async def test_price_moved_after_signing_reverts_as_slippage(chain: Chain) -> None:
    """The swap is quoted, priced and signed; another account's swap lands first; ours
    reverts on chain with INSUFFICIENT_OUTPUT_AMOUNT and nothing moves."""
    d = chain.devnet
    treasury = chain.treasury
    path = [d.quote_token, d.serv_token]
    before = await balances(chain)
    seen: list = []

    async def front_run(prepared) -> None:  # called after signing, before broadcast
        if prepared.tx["to"] != chain.router.address:
            return  # the approve
        seen.append(prepared)
        assert (await treasury.lookup(prepared.tx_hash)).status is TxStatus.UNKNOWN
        await trader_buys(chain, 20_000 * USD)

    with pytest.raises(SlippageExceeded) as info:
        await swap(treasury, chain.router, 1_000 * USD, path, max_slippage_bps=50,
                   max_price_impact_bps=200, on_prepared=front_run)
    assert info.value.tx_hash == seen[0].tx_hash
    assert "INSUFFICIENT_OUTPUT_AMOUNT" in str(info.value)
    assert (await treasury.lookup(seen[0].tx_hash)).status is TxStatus.REVERTED
    assert await treasury.nonce_state(seen[0].nonce) is NonceStatus.MINED
    assert await balances(chain) == before


async def test_price_moved_before_signing_is_caught_by_estimation(chain: Chain) -> None:
    d = chain.devnet
    treasury, router = chain.treasury, chain.router
    path = [d.quote_token, d.serv_token]
    quote = await router.quote(1_000 * USD, path)
    await trader_buys(chain, 20_000 * USD)
    before = await balances(chain)
    # approve so the estimate fails on the price, not on the allowance
    usd = erc20(chain.w3, d.quote_token)
    await treasury.send({"to": usd.address, "data": usd.encode_abi("approve", [router.address, 10**12])})
    pending = await chain.w3.eth.get_transaction_count(d.treasury, "pending")
    with pytest.raises(SlippageExceeded):
        await treasury.send(router.swap_tx(1_000 * USD, quote.amount_out_min(50), path, d.treasury,
                                           2**40))
    assert await chain.w3.eth.get_transaction_count(d.treasury, "pending") == pending
    assert await balances(chain) == before


async def test_expired_deadline(chain: Chain) -> None:
    d = chain.devnet
    treasury, router = chain.treasury, chain.router
    path = [d.quote_token, d.serv_token]
    before = await balances(chain)
    nonce_before = await chain.w3.eth.get_transaction_count(d.treasury)
    head = await chain.w3.eth.get_block("latest")
    # refused before any transaction (not even the approve)
    with pytest.raises(DeadlineExpired):
        await swap(treasury, router, 100 * USD, path, max_slippage_bps=50,
                   max_price_impact_bps=200, deadline=head["timestamp"] - 1)
    assert await chain.w3.eth.get_transaction_count(d.treasury) == nonce_before
    # the router's own EXPIRED revert maps to the same error
    usd = erc20(chain.w3, d.quote_token)
    await treasury.send({"to": usd.address, "data": usd.encode_abi("approve", [router.address, 10**12])})
    with pytest.raises(DeadlineExpired) as info:
        await treasury.send(router.swap_tx(100 * USD, 1, path, d.treasury, head["timestamp"] - 1))
    assert "EXPIRED" in str(info.value)
    assert await balances(chain) == before


async def test_empty_treasury(chain: Chain) -> None:
    d = chain.devnet
    empty_key = "0x" + "11" * 32
    empty = chain.sender(empty_key)
    # gas money but no tokens
    await chain.w3.eth.send_transaction({"from": (await chain.w3.eth.accounts)[0],
                                         "to": empty.address, "value": 10**18})
    with pytest.raises(InsufficientBalance):
        await swap(empty, chain.router, 100 * USD, [d.quote_token, d.serv_token],
                   max_slippage_bps=50, max_price_impact_bps=200)
    assert await chain.w3.eth.get_transaction_count(empty.address) == 0
    # the token's own revert (OpenZeppelin custom error) maps to InsufficientBalance too
    usd = erc20(chain.w3, d.quote_token)
    with pytest.raises(InsufficientBalance) as info:
        await empty.send({"to": usd.address, "data": usd.encode_abi("transfer", [d.trader, 1])})
    assert "ERC20InsufficientBalance" in str(info.value)
    # no ether at all: refused before anything is broadcast
    broke = chain.sender("0x" + "22" * 32)
    with pytest.raises(InsufficientBalance):
        await broke.send({"to": d.trader, "value": 1})
    assert await chain.w3.eth.get_transaction_count(broke.address, "pending") == 0


async def test_wrong_router_address(chain: Chain) -> None:
    d = chain.devnet
    path = [d.quote_token, d.serv_token]
    nonce_before = await chain.w3.eth.get_transaction_count(d.treasury)
    for address in (Account.from_key("0x" + "33" * 32).address, d.serv_token):
        with pytest.raises(ContractNotFound):
            await swap(chain.treasury, UniswapV2Router(chain.w3, address), 100 * USD, path,
                       max_slippage_bps=50, max_price_impact_bps=200)
    assert await chain.w3.eth.get_transaction_count(d.treasury) == nonce_before


async def test_swap_refuses_high_price_impact(chain: Chain) -> None:
    d = chain.devnet
    before = await balances(chain)
    with pytest.raises(PriceImpactTooHigh):
        await swap(chain.treasury, chain.router, 50_000 * USD, [d.quote_token, d.serv_token],
                   max_slippage_bps=50, max_price_impact_bps=200)
    assert await balances(chain) == before


async def test_amount_out_min_is_the_lower_of_the_quote_and_the_cap(chain: Chain) -> None:
    """expected_out_cap (what a TWAP says the amount buys) bounds amountOutMin from above: a
    spot quote inflated within the block cannot raise it; a lower quote still wins."""
    d = chain.devnet
    path = [d.quote_token, d.serv_token]
    quote = await chain.router.quote(1_000 * USD, path)
    cap = quote.amount_out * 9_000 // 10_000
    capped = await swap(chain.treasury, chain.router, 1_000 * USD, path, to=d.treasury,
                        max_slippage_bps=50, max_price_impact_bps=200, expected_out_cap=cap)
    assert capped.amount_out_min == cap * 9_950 // 10_000
    quote = await chain.router.quote(1_000 * USD, path)
    loose = await swap(chain.treasury, chain.router, 1_000 * USD, path, to=d.treasury,
                       max_slippage_bps=50, max_price_impact_bps=200,
                       expected_out_cap=quote.amount_out * 2)
    assert loose.amount_out_min == quote.amount_out * 9_950 // 10_000


def test_plan_chunks() -> None:
    reserves = [(1_000_000 * USD, 100_000_000 * 10**18)]
    chunks = plan_chunks(60_000 * USD, reserves, 200)
    assert sum(chunks) == 60_000 * USD
    assert max(chunks) - min(chunks) <= 1
    assert all(simulate_impact_bps(c, reserves) <= 200 for c in chunks)
    assert plan_chunks(10 * USD, reserves, 200) == [10 * USD]
    with pytest.raises(PriceImpactTooHigh):
        plan_chunks(10 * USD, reserves, 30)  # not above the 0.3% LP fee


async def test_revert_without_known_reason_is_tx_reverted(chain: Chain) -> None:
    d = chain.devnet
    router = chain.router
    with pytest.raises(TxReverted):
        # identical tokens: UniswapV2Library: IDENTICAL_ADDRESSES
        await router.get_amounts_out(1, [d.quote_token, d.quote_token])
