"""Miners: registration and identity (the lease protocol is app/leases; each job kind its own)."""

from __future__ import annotations

from sqlalchemy import select
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
