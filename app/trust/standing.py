"""A wallet's standing, as the lease path needs it on every poll: on probation or not, and its
score. Read from its miners row and remembered STANDING_TTL_S per process (a check that changes
it forgets it here at once; other processes see it within the TTL)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from app.config import Settings
from app.context import AppContext
from app.models import Miner
from app.ttlcache import TTLCache

log = logging.getLogger(__name__)
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


def channel(redis_prefix: str) -> str:
    """Where a process says a wallet's standing changed for the worse (back on probation)."""
    return f"{redis_prefix}:trust:standing"


def forget_all() -> None:
    """The handler of channel(): read every wallet's standing afresh (app/main.py)."""
    _cache.clear()


async def forget_everywhere(c: AppContext) -> None:
    """Every process reads standings afresh, now (the lease path then stops handing this
    wallet business jobs at once; if Redis cannot be told, within STANDING_TTL_S)."""
    _cache.clear()
    try:
        await c.redis.publish(channel(c.settings.redis_prefix), "demoted")
    except Exception as exc:
        log.warning("could not announce a wallet back on probation (%s); other processes "
                    "see it within %.0f s", type(exc).__name__, STANDING_TTL_S)
