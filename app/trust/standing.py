"""A wallet's standing, as the lease path needs it on every poll: on probation or not, and its
score. Read from its miners row and remembered STANDING_TTL_S per process (a check that changes
it forgets it here at once; other processes see it within the TTL)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from app.config import Settings
from app.context import AppContext
from app.models import Miner
from app.ttlcache import TTLCache

STANDING_TTL_S = 5.0
_cache = TTLCache()


@dataclass(frozen=True)
class Standing:
    miner_id: int
    address: str
    probation: bool
    score: float


def score(passed: float, failed: float) -> float:
    """The mean of the Beta(1 + passed, 1 + failed) posterior: 0.5 for a wallet never checked."""
    return (1.0 + passed) / (2.0 + passed + failed)


def on_probation(settings: Settings, address: str, graduated: bool) -> bool:
    return (settings.probation_jobs > 0 and not graduated
            and address.lower() not in settings.trusted)


async def standing(c: AppContext, miner_id: int) -> Standing:
    key = (c.settings.redis_prefix, miner_id)
    found = _cache.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    async with c.db.reads() as session:
        row = (await session.execute(select(
            Miner.address, Miner.graduated_at, Miner.rep_passed, Miner.rep_failed)
            .where(Miner.id == miner_id))).first()
    if row is None:
        found = Standing(miner_id, "", False, 0.5)
    else:
        found = Standing(miner_id, row.address,
                         on_probation(c.settings, row.address, row.graduated_at is not None),
                         score(row.rep_passed or 0.0, row.rep_failed or 0.0))
    _cache.put(key, found, STANDING_TTL_S)
    return found


def forget(c: AppContext, miner_id: int) -> None:
    _cache.discard((c.settings.redis_prefix, miner_id))
