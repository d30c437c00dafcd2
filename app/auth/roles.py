"""Role policy: which roles a wallet's session gets."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Forbidden
from app.models import Miner


def roles_for(settings: Settings, address: str, is_miner: bool) -> frozenset[str]:
    roles = {"miner"} if is_miner else set()
    if address.lower() in settings.operators:
        roles.add("operator")
    return frozenset(roles)


async def miner_id_for(session: AsyncSession, address: str) -> int | None:
    """The registered miner of a wallet, if any."""
    return (await session.execute(select(Miner.id).where(Miner.address == address))).scalar()


def suspended_error() -> Forbidden:
    return Forbidden("an operator has suspended this wallet", code="miner_suspended")


async def refuse_suspended(session: AsyncSession, address: str) -> None:
    """403 miner_suspended at sign-in (and registration) of a suspended wallet."""
    if (await session.execute(select(Miner.suspended_at)
                              .where(Miner.address == address))).scalar() is not None:
        raise suspended_error()
