"""The revenue ledger, read side: what jobs earned. A RevenueEvent is written only from a charge,
in the completing transaction (app/accounts/billing.settle): revenue is what was charged.

Money is Decimal USD with six places (ROUND_HALF_UP). Totals are SQL aggregates over the
ledger; nothing here keeps a running counter.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import RevenueEvent

MICRO = Decimal("0.000001")


def _sum():  # type: ignore[no-untyped-def]
    # The USD column stores integer micro-dollars, so SUM is exact in SQL and reads back Decimal.
    return func.coalesce(func.sum(RevenueEvent.amount_usd), Decimal(0))


def usd(value: Decimal) -> Decimal:
    return value.quantize(MICRO, rounding=ROUND_HALF_UP)


def revenue_for(output_tokens: int, price_per_1k_usd: Decimal) -> Decimal:
    """USD earned for `output_tokens` tokens at `price_per_1k_usd` per 1000 tokens."""
    if isinstance(output_tokens, bool) or not isinstance(output_tokens, int) or output_tokens < 0:
        raise ValueError("output_tokens must be a non-negative int")
    return usd(Decimal(output_tokens) * price_per_1k_usd / 1000)


def runpod_cost(execution_ms: int | None, cost_per_second_usd: Decimal) -> Decimal | None:
    if execution_ms is None:
        return None
    return usd(Decimal(execution_ms) * cost_per_second_usd / 1000)


async def by_source(session: AsyncSession) -> dict[str, tuple[Decimal, int]]:
    """{source: (total USD, events)} in one aggregate query; the treasury's carry-overs (revenue
    a partial buyback gave back) are not new revenue and are left out. What is unallocated is
    the treasury's to say (app.treasury.repository.unallocated_usd)."""
    rows = await session.execute(
        select(RevenueEvent.source, _sum(), func.count())
        .where(RevenueEvent.carried_from_buyback_id.is_(None)).group_by(RevenueEvent.source))
    return {source: (usd(total), int(n)) for source, total, n in rows}
