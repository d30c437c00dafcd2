"""Who a bearer secret belongs to, remembered for a few seconds in each process.

Without it every authenticated request reads its key or token row first, which was the most
frequent statement on the hot path. Entries are keyed by the kind of secret ("key" or "token")
and its SHA-256 as stored, so an API key can never be taken for a session token or the other way
round. A revocation clears the cache of every process at once through Redis pub/sub
(app/notify.py); AUTH_CACHE_TTL_S bounds what a lost message can cost. Expiry and scopes are
still checked on every request.

Refusals are remembered too (REFUSAL_TTL_S), so a bogus secret sent again and again costs no
database read; and a client IP whose failed authentications ran out of its per-IP budget is
refused here, without a database read, until its Retry-After has passed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from app.ttlcache import REFUSAL_TTL_S, SecretCache

if TYPE_CHECKING:
    from app.context import AppContext

log = logging.getLogger(__name__)

EVENT_CHANNEL = "events:auth"  # under the Redis prefix; any message means "forget everything"
AuthCache = SecretCache  # the context's auth_cache (app/ttlcache.py)
__all__ = ["REFUSAL_TTL_S", "AuthCache", "announce_revocation", "channel", "forget_everywhere"]


def channel(redis_prefix: str) -> str:
    return f"{redis_prefix}:{EVENT_CHANNEL}"


async def forget_everywhere(redis: Any, redis_prefix: str) -> bool:
    """Tell every process to drop what it remembers (after a revocation). False if Redis could
    not be told: the other processes then forget within their TTL."""
    try:
        await redis.publish(channel(redis_prefix), "revoked")
        return True
    except Exception:
        return False


async def announce_revocation(c: AppContext) -> None:
    """After a key or token is revoked (committed): this process forgets at once, the others
    when Redis tells them, or within AUTH_CACHE_TTL_S if it cannot."""
    c.auth_cache.clear()
    if not await forget_everywhere(c.redis, c.settings.redis_prefix):
        log.warning("could not announce a revocation over Redis; other processes honour it "
                    "within AUTH_CACHE_TTL_S")
