"""The buyback's price check: the pool's spot price against its TWAP (Uniswap V2 cumulative
prices) over TWAP_WINDOW_S, from observations stored in the database (price_observations).

The worker stores one at every threshold check and the runner one at every chunk, so the
history is there when a buyback needs it; two observations a window apart give the average.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from app.context import AppContext
from app.treasury import repository as repo
from app.treasury.onchain import Treasury, get_treasury
from chain.oracle import Observation, amount_out_at, deviation_bps, observe, twap

HISTORY_WINDOWS = 4  # observations older than this many windows are neither used nor kept


@dataclass(frozen=True)
class Verdict:
    cap: int | None  # what the chunk should buy at the TWAP (None: the check is off)
    wait_reason: str | None = None  # price_deviation | twap_warmup: the chunk must wait
    wait_s: float = 0.0
    detail: str = ""


def _ratio(value: Fraction) -> str:
    """A price for people to read: 8 significant digits, exact arithmetic (no float)."""
    return format(Decimal(value.numerator) / Decimal(value.denominator), ".8g")


async def record_observation(ctx: AppContext, t: Treasury, pair: str) -> Observation:
    """Read the pair's cumulative prices now and store them (the TWAP's history)."""
    now = await observe(t.w3, pair)
    async with ctx.db.transaction() as session:
        await repo.add_observation(session, pair, now.block_number, now.timestamp,
                                   now.price0_cumulative, now.price1_cumulative,
                                   keep_s=HISTORY_WINDOWS * max(int(ctx.settings.twap_window_s), 1))
    return now


async def observe_price(ctx: AppContext) -> None:
    """For the worker's threshold check: keep the TWAP's history filled between buybacks."""
    if ctx.settings.twap_window_s <= 0:
        return
    t = await get_treasury(ctx)
    await record_observation(ctx, t, await t.router.pair(t.quote, t.serv))


async def check(ctx: AppContext, t: Treasury, chunk: int, reserve_in: int) -> Verdict:
    """Whether ``chunk`` (stablecoin base units) may be swapped now, and the cap on what it
    should buy: the TWAP price applied to a pool of ``reserve_in`` depth, fee and impact
    included. The chunk waits when the spot price is more than MAX_TWAP_DEVIATION_BPS from the
    TWAP, or when no observation between 1 and HISTORY_WINDOWS windows old exists yet."""
    s = ctx.settings
    window = int(s.twap_window_s)
    if window <= 0:
        return Verdict(cap=None)
    pair = await t.router.pair(t.quote, t.serv)
    now = await record_observation(ctx, t, pair)
    async with ctx.db.sessions() as session:
        old = await repo.observation_before(session, pair, now.timestamp - window,
                                            now.timestamp - HISTORY_WINDOWS * window)
    if old is None:
        return Verdict(cap=None, wait_reason="twap_warmup", wait_s=float(window),
                       detail=f"no price observation of {pair} from {window}s to "
                              f"{HISTORY_WINDOWS * window}s ago yet; waiting")
    older = Observation(int(old.block_number), int(old.timestamp), int(old.price0_cumulative),
                        int(old.price1_cumulative), 0, 0)
    quote_is_0 = int(t.quote, 16) < int(t.serv, 16)  # Uniswap V2 sorts token0 < token1
    average = twap(older, now, quote_is_0)
    r_in, r_out = (now.reserve0, now.reserve1) if quote_is_0 else (now.reserve1, now.reserve0)
    spot = Fraction(r_out, r_in)
    off = deviation_bps(spot, average)
    if off > s.max_twap_deviation_bps:
        return Verdict(cap=None, wait_reason="price_deviation",
                       wait_s=float(s.buyback_pause_recheck_s),
                       detail=f"spot {_ratio(spot)} is {off} bps from the "
                              f"{now.timestamp - older.timestamp}s TWAP {_ratio(average)} "
                              f"($SERV base units per stablecoin base unit; limit "
                              f"{s.max_twap_deviation_bps} bps); the chunk waits")
    return Verdict(cap=amount_out_at(chunk, reserve_in, average))
