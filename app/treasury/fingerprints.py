"""What each public chain-derived answer is computed from in the database, as a cheap hashable
value: the key under which app/blockcache.py keeps the answer, next to the block number."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from sqlalchemy import select
from starlette.requests import Request

from app.context import ctx
from app.models import Buyback, BuybackTx
from app.treasury import repository

MAX_ID = 2**31 - 1


def _row(row: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, column.key) for column in row.__table__.columns)


async def summary_records(request: Request) -> Hashable:
    """The summary is computed from the burn totals and the revenue ledger (revenue, swapped,
    unallocated, in flight), the burns compared with the chain and the deposits credited: any change is a new answer,
    even within one block."""
    async with ctx(request).db.sessions() as session:
        return repr((await repository.totals(session), await repository.ledger(session),
                     await repository.burn_records(session),
                     await repository.deposit_totals(session)))


async def burn_records(request: Request) -> Hashable | None:
    """Every column of the buyback and its transactions; None for an id that names none."""
    raw = request.path_params["buyback_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > MAX_ID:
        return None
    async with ctx(request).db.sessions() as session:
        bb = await session.get(Buyback, int(raw))
        if bb is None:
            return None
        txs = (await session.execute(select(BuybackTx).where(BuybackTx.buyback_id == bb.id)
                                     .order_by(BuybackTx.id))).scalars().all()
        return (_row(bb), *(_row(t) for t in txs))
