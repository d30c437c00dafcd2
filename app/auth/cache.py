"""Who a bearer secret belongs to, remembered for a few seconds in each process.

Without it every authenticated request reads its key or token row first, which was the most
frequent statement on the hot path. Only successful look-ups are kept (unknown secrets always go
to the database), keyed by the secret's SHA-256 as stored. A revocation clears the cache of every
process at once through Redis pub/sub (app/notify.py); AUTH_CACHE_TTL_S bounds what a lost message
can cost. Expiry and scopes are still checked on every request.
"""

from __future__ import annotations

from typing import Any

EVENT_CHANNEL = "events:auth"  # under the Redis prefix; any message means "forget everything"
# The per-process store itself is the context's TTLCache (app/ttlcache.py), AppContext.auth_cache.


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
