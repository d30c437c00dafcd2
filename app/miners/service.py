"""Miners: registration and identity (the lease protocol is app/leases; each job kind its own)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Miner, utcnow


async def register(session: AsyncSession, address: str, name: str | None) -> Miner:
    """The wallet's miner, created on first registration (a concurrent first registration of
    the same address makes the caller's commit fail with IntegrityError: retry)."""
    miner = (await session.execute(select(Miner).where(Miner.address == address))).scalar()
    if miner is None:
        miner = Miner(name=name or f"miner-{address[2:10].lower()}", address=address,
                      job_count=0, tokens_generated=0, created_at=utcnow())
        session.add(miner)
    elif name:
        miner.name = name
    await session.flush()
    return miner


async def set_suspended(session: AsyncSession, address: str,
                        suspended_at: datetime | None) -> int | None:
    """Suspend (a time) or unsuspend (None) the wallet's miner; its id, None if unknown. An
    operator's suspension has no recorded reason (app/trust records its own); lifting one
    clears the reason."""
    return (await session.execute(
        update(Miner.__table__).where(Miner.address == address)
        .values(suspended_at=suspended_at, suspended_reason=None).returning(Miner.id))).scalar()
