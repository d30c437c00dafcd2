"""Uniswap V2-compatible quote and swap.

Price impact is measured like the Uniswap v2-sdk: the shortfall of the executed output against
the mid price output, LP fee included, in basis points. So MAX_PRICE_IMPACT_BPS must be above a
pool's fee (30 bps on Uniswap V2) or nothing can trade.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from chain import artifacts
from chain.errors import (
    ConfigError,
    ContractNotFound,
    DeadlineExpired,
    InsufficientBalance,
    InsufficientLiquidity,
    PriceImpactTooHigh,
    map_exception,
)
from chain.tokens import erc20, received
from chain.tx import OnPrepared, TxSender

log = logging.getLogger("chain.dex")

ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class Quote:
    """All amounts in base units of the path's first (in) and last (out) token."""

    path: tuple[str, ...]
    amount_in: int
    amount_out: int  # what getAmountsOut says the pool pays now
    mid_out: int  # what amount_in buys at the mid price (no fee, no impact)
    price_impact_bps: int  # (mid_out - amount_out) / mid_out, rounded up, LP fee included

    def amount_out_min(self, max_slippage_bps: int) -> int:
        if not 0 <= max_slippage_bps < 10_000:
            raise ConfigError("max_slippage_bps must be in [0, 10000)")
        return self.amount_out * (10_000 - max_slippage_bps) // 10_000


@dataclass(frozen=True)
class SwapResult:
    tx_hash: str
    nonce: int
    amount_in: int
    quoted_out: int
    amount_out_min: int
    received: int  # read from the receipt's Transfer logs, not from the quote
    gas_used: int
    block_number: int
    deadline: int  # unix seconds
    price_impact_bps: int  # of the quote the swap was priced from
    approve_tx_hash: str | None = None


class UniswapV2Router:
    def __init__(self, w3: AsyncWeb3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=artifacts.abi("UniswapV2Router02"))
        self._factory: Any = None

    async def factory(self) -> Any:
        """The router's factory contract; raises ContractNotFound for a wrong router address."""
        if self._factory is None:
            if not await self.w3.eth.get_code(self.address):
                raise ContractNotFound(f"no contract at router address {self.address}")
            try:
                factory = await self.contract.functions.factory().call()
            except Exception as exc:
                raise ContractNotFound(
                    f"{self.address} is not a Uniswap V2 router (factory() failed: {exc})"
                ) from exc
            if not await self.w3.eth.get_code(factory):
                raise ContractNotFound(f"router {self.address} points to a factory without code")
            self._factory = self.w3.eth.contract(address=factory, abi=artifacts.abi("UniswapV2Factory"))
        return self._factory

    async def pair(self, token_a: str, token_b: str) -> str:
        factory = await self.factory()
        pair = await factory.functions.getPair(
            to_checksum_address(token_a), to_checksum_address(token_b)
        ).call()
        if int(pair, 16) == 0:
            raise InsufficientLiquidity(f"no pool for {token_a}/{token_b}")
        return pair

    async def reserves(self, path: Sequence[str]) -> list[tuple[int, int]]:
        """(reserve_in, reserve_out) for each hop of ``path``, base units."""
        out = []
        for a, b in zip(path, path[1:]):
            pair_addr = await self.pair(a, b)
            pair = self.w3.eth.contract(address=pair_addr, abi=artifacts.abi("UniswapV2Pair"))
            r0, r1, _ = await pair.functions.getReserves().call()
            token0 = await pair.functions.token0().call()
            out.append((r0, r1) if token0 == to_checksum_address(a) else (r1, r0))
        return out

    async def get_amounts_out(self, amount_in: int, path: Sequence[str]) -> list[int]:
        await self.factory()
        try:
            return list(
                await self.contract.functions.getAmountsOut(int(amount_in), _path(path)).call()
            )
        except Exception as exc:
            raise map_exception(exc) from exc

    async def quote(self, amount_in: int, path: Sequence[str]) -> Quote:
        if amount_in <= 0:
            raise ConfigError("amount_in must be positive")
        path = _path(path)
        amounts = await self.get_amounts_out(amount_in, path)
        reserves = await self.reserves(path)
        num, den = amount_in, 1
        for r_in, r_out in reserves:
            if r_in == 0 or r_out == 0:
                raise InsufficientLiquidity(f"empty pool on path {path}")
            num, den = num * r_out, den * r_in
        mid_out = num // den
        out = amounts[-1]
        impact = max(0, -(-(num - out * den) * 10_000 // num))
        return Quote(tuple(path), int(amount_in), int(out), int(mid_out), int(impact))

    def swap_tx(
        self, amount_in: int, amount_out_min: int, path: Sequence[str], to: str, deadline: int
    ) -> dict[str, Any]:
        """Unsigned swapExactTokensForTokens call (to, data)."""
        data = self.contract.encode_abi(
            "swapExactTokensForTokens",
            [int(amount_in), int(amount_out_min), _path(path), to_checksum_address(to), int(deadline)],
        )
        return {"to": self.address, "data": data, "value": 0}


def _path(path: Sequence[str]) -> list[str]:
    if len(path) < 2:
        raise ConfigError("a swap path needs at least two tokens")
    return [to_checksum_address(p) for p in path]


def amount_out(amount_in: int, reserve_in: int, reserve_out: int, fee_bps: int = 30) -> int:
    """UniswapV2Library.getAmountOut with a configurable fee (30 bps on Uniswap V2)."""
    with_fee = amount_in * (10_000 - fee_bps)
    return with_fee * reserve_out // (reserve_in * 10_000 + with_fee)


def simulate_impact_bps(amount_in: int, reserves: Sequence[tuple[int, int]], fee_bps: int = 30) -> int:
    num, den, out = amount_in, 1, amount_in
    for r_in, r_out in reserves:
        out = amount_out(out, r_in, r_out, fee_bps)
        num, den = num * r_out, den * r_in
    return max(0, -(-(num - out * den) * 10_000 // num))


def max_amount_in(reserves: Sequence[tuple[int, int]], max_price_impact_bps: int, fee_bps: int = 30) -> int:
    """The largest amount_in whose price impact (fee included) stays <= the limit."""
    if max_price_impact_bps <= fee_bps:
        return 0
    lo, hi = 0, reserves[0][0] * 10
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if simulate_impact_bps(mid, reserves, fee_bps) <= max_price_impact_bps:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_chunks(
    total_in: int, reserves: Sequence[tuple[int, int]], max_price_impact_bps: int, fee_bps: int = 30
) -> list[int]:
    """Split ``total_in`` into equal chunks that each stay under the impact limit at the current
    reserves. Later chunks meet a deeper input reserve, so their impact is no larger."""
    if total_in <= 0:
        raise ConfigError("total_in must be positive")
    cap = max_amount_in(reserves, max_price_impact_bps, fee_bps)
    if cap == 0:
        raise PriceImpactTooHigh(
            f"max_price_impact_bps={max_price_impact_bps} is not above the pool fee ({fee_bps} bps)"
        )
    n = -(-total_in // cap)
    base, extra = divmod(total_in, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


async def ensure_allowance(
    sender: TxSender,
    token: str,
    spender: str,
    amount: int,
    *,
    confirmations: int = 1,
    timeout: float = 120.0,
    on_prepared: OnPrepared | None = None,
) -> Any | None:
    """Approve exactly ``amount`` only when the allowance is short. Returns the approve receipt,
    or None when no transaction was needed."""
    contract = erc20(sender.w3, token)
    current = await contract.functions.allowance(sender.address, to_checksum_address(spender)).call()
    if current >= amount:
        return None
    data = contract.encode_abi("approve", [to_checksum_address(spender), int(amount)])
    return await sender.send(
        {"to": contract.address, "data": data},
        confirmations=confirmations, timeout=timeout, on_prepared=on_prepared,
    )


async def deadline_in(w3: AsyncWeb3, seconds: int) -> int:
    """Unix deadline ``seconds`` from now; by the later of the wall clock and the chain head,
    so an idle dev chain with an old head block does not yield an already-past deadline."""
    head = await w3.eth.get_block("latest")
    return max(int(time.time()), int(head["timestamp"])) + int(seconds)


async def swap(
    sender: TxSender,
    router: UniswapV2Router,
    amount_in: int,
    path: Sequence[str],
    *,
    to: str | None = None,
    max_slippage_bps: int,
    max_price_impact_bps: int,
    deadline_seconds: int = 300,
    deadline: int | None = None,
    confirmations: int = 1,
    timeout: float = 120.0,
    on_prepared: OnPrepared | None = None,
    expected_out_cap: int | None = None,
) -> SwapResult:
    """Quote, refuse if the impact is too high, approve if short, then swapExactTokensForTokens
    with amountOutMin = min(quote, ``expected_out_cap``) * (1 - slippage) and ``to`` = the
    treasury (default: sender). ``expected_out_cap`` is what an independent price (a TWAP) says
    the amount should buy: the spot quote alone can be pushed in the same block.
    Nothing is sent when the balance is short or the quote fails. When an approve was needed,
    quote, impact check and deadline are taken again after it is mined."""
    path = _path(path)
    to = to_checksum_address(to or sender.address)
    token_in = erc20(sender.w3, path[0])
    balance = await token_in.functions.balanceOf(sender.address).call()
    if balance < amount_in:
        raise InsufficientBalance(
            f"{sender.address} holds {balance} of {path[0]}, needs {amount_in} (base units)"
        )
    fixed_deadline = deadline

    async def price() -> tuple[Quote, int, int]:
        quote = await router.quote(amount_in, path)
        if quote.price_impact_bps > max_price_impact_bps:
            raise PriceImpactTooHigh(
                f"price impact {quote.price_impact_bps} bps > limit {max_price_impact_bps} bps "
                f"for {amount_in} in; split the buyback"
            )
        min_out = quote.amount_out_min(max_slippage_bps)
        if expected_out_cap is not None:
            min_out = min(min_out, expected_out_cap * (10_000 - max_slippage_bps) // 10_000)
        if min_out <= 0:
            raise InsufficientLiquidity(f"quote for {amount_in} pays nothing")
        deadline = fixed_deadline
        if deadline is None:
            deadline = await deadline_in(sender.w3, deadline_seconds)
        head = await sender.w3.eth.get_block("latest")
        if deadline <= int(head["timestamp"]):
            raise DeadlineExpired(f"deadline {deadline} is not after the chain head {head['timestamp']}")
        return quote, min_out, deadline

    quote, min_out, deadline = await price()  # refuse before approving anything
    approve = await ensure_allowance(
        sender, path[0], router.address, amount_in,
        confirmations=confirmations, timeout=timeout, on_prepared=on_prepared,
    )
    if approve is not None:
        # the approve took blocks (and maybe replacements): price the swap as it is now
        quote, min_out, deadline = await price()
    tx = router.swap_tx(amount_in, min_out, path, to, deadline)
    receipt, final = await sender.send_tracked(
        tx, confirmations=confirmations, timeout=timeout, on_prepared=on_prepared
    )
    got = received(receipt, path[-1], to)
    result = SwapResult(
        tx_hash=final.tx_hash,
        nonce=final.nonce,
        amount_in=int(amount_in),
        quoted_out=quote.amount_out,
        amount_out_min=min_out,
        received=got,
        gas_used=int(receipt["gasUsed"]),
        block_number=int(receipt["blockNumber"]),
        deadline=deadline,
        price_impact_bps=quote.price_impact_bps,
        approve_tx_hash=_hexstr(approve["transactionHash"]) if approve is not None else None,
    )
    log.info("swap %s: %d in, %d out (quoted %d, min %d)", result.tx_hash, amount_in, got,
             quote.amount_out, min_out)
    return result


def _hexstr(value: Any) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()
