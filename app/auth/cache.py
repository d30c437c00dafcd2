"""Who a bearer secret belongs to, remembered for a few seconds in each process.

Without it every authenticated request reads its key or token row first, which was the most
frequent statement on the hot path. Only successful look-ups are kept (unknown secrets always go
to the database), keyed by the secret's SHA-256 as stored. A revocation clears the cache of every
process at once through Redis pub/sub (app/notify.py); AUTH_CACHE_TTL_S bounds what a lost message
can cost. Expiry and scopes are still checked on every request.
"""

from __future__ import annotations

import time
from typing import Any

MAX_ENTRIES = 100_000  # beyond this the cache starts over rather than grow without bound
EVENT_CHANNEL = "events:auth"  # under the Redis prefix; any message means "forget everything"


class AuthCache:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[float, Any]] = {}

    def get(self, secret_hash: str) -> Any | None:
        item = self._items.get(secret_hash)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._items.pop(secret_hash, None)
            return None
        return item[1]

    def put(self, secret_hash: str, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._items) >= MAX_ENTRIES:
            self._items.clear()
        self._items[secret_hash] = (time.monotonic() + self.ttl_s, value)

    def clear(self) -> None:
        self._items.clear()


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
