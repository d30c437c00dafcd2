"""A Uniswap V2 pair's time-weighted average price (TWAP) from its cumulative prices.

The pair adds ``reserve1/reserve0`` (UQ112x112) × seconds to ``price0CumulativeLast`` at the
first trade of each block, with the reserves as they were BEFORE that block's trades: a price
pushed within one block weighs nothing until time passes, and holding it costs the manipulator
the arbitrage for every second. Two observations ``window`` seconds apart give the average
price over that window, as UniswapV2OracleLibrary and ExampleOracleSimple compute it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from chain import artifacts

Q112 = 2**112
UINT256 = 2**256


@dataclass(frozen=True)
class Observation:
    """Cumulative prices (UQ112x112 × seconds, wrapping at 2**256) at ``timestamp`` (unix s),
    counterfactually brought up to that block as currentCumulativePrices does."""

    block_number: int
    timestamp: int
    price0_cumulative: int
    price1_cumulative: int
    reserve0: int
    reserve1: int


async def observe(w3: AsyncWeb3, pair: str) -> Observation:
    """The pair's cumulative prices as of the latest block, all read at that one block."""
    contract = w3.eth.contract(address=to_checksum_address(pair), abi=artifacts.abi("UniswapV2Pair"))
    block = await w3.eth.get_block("latest")
    number, now = int(block["number"]), int(block["timestamp"])
    r0, r1, last = await contract.functions.getReserves().call(block_identifier=number)
    p0 = int(await contract.functions.price0CumulativeLast().call(block_identifier=number))
    p1 = int(await contract.functions.price1CumulativeLast().call(block_identifier=number))
    elapsed = now - int(last)
    if elapsed > 0 and r0 > 0 and r1 > 0:
        # the pair updates the sums only at its next trade: add the time since, at the
        # current reserves, exactly like UniswapV2OracleLibrary.currentCumulativePrices
        p0 = (p0 + (r1 * Q112 // r0) * elapsed) % UINT256
        p1 = (p1 + (r0 * Q112 // r1) * elapsed) % UINT256
    return Observation(number, now, p0, p1, int(r0), int(r1))


def twap(older: Observation, newer: Observation, token_in_is_token0: bool) -> Fraction:
    """Average price over [older, newer] in units of the out token per unit of the in token
    (base units). Raises ValueError when no time separates them."""
    dt = newer.timestamp - older.timestamp
    if dt <= 0:
        raise ValueError("a TWAP needs observations at different times")
    if token_in_is_token0:
        delta = (newer.price0_cumulative - older.price0_cumulative) % UINT256
    else:
        delta = (newer.price1_cumulative - older.price1_cumulative) % UINT256
    return Fraction(delta, dt * Q112)


def deviation_bps(spot: Fraction, average: Fraction) -> int:
    """|spot - average| / average in basis points, rounded up."""
    if average <= 0:
        raise ValueError("the average price must be positive")
    ratio = abs(spot - average) * 10_000 / average
    return -(-ratio.numerator // ratio.denominator)


def amount_out_at(amount_in: int, reserve_in: int, price: Fraction, fee_bps: int = 30) -> int:
    """What ``amount_in`` would buy (fee and price impact included) from a pool of the same
    input depth whose price were ``price`` (out per in): the TWAP leg of amountOutMin."""
    reserve_out = int(reserve_in * price)
    with_fee = amount_in * (10_000 - fee_bps)
    return with_fee * reserve_out // (reserve_in * 10_000 + with_fee)
