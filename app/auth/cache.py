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
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.context import AppContext

log = logging.getLogger(__name__)

MAX_ENTRIES = 100_000  # beyond this a table starts over rather than grow without bound
EVENT_CHANNEL = "events:auth"  # under the Redis prefix; any message means "forget everything"
REFUSAL_TTL_S = 60.0  # an unknown secret stays unknown (they are random); a revoked one revoked


class _Expiring:
    """A bounded dict whose entries lapse at a monotonic deadline."""

    def __init__(self) -> None:
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        return item[1]

    def put(self, key: Any, value: Any, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        if len(self._items) >= MAX_ENTRIES:
            self._items.clear()
        self._items[key] = (time.monotonic() + ttl_s, value)

    def clear(self) -> None:
        self._items.clear()


class AuthCache:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._known = _Expiring()  # (kind, hash) -> principal
        # Apart from the known ones, so a flood of bogus secrets cannot push valid ones out.
        self._refused = _Expiring()  # (kind, hash) -> (error code, detail)
        self._blocked = _Expiring()  # client IP -> monotonic time its block ends

    def get(self, kind: str, secret_hash: str) -> Any | None:
        return self._known.get((kind, secret_hash))

    def put(self, kind: str, secret_hash: str, value: Any) -> None:
        self._known.put((kind, secret_hash), value, self.ttl_s)

    def refusal(self, kind: str, secret_hash: str) -> tuple[str, str] | None:
        """(error code, detail) of a secret refused lately, else None."""
        return self._refused.get((kind, secret_hash))  # type: ignore[no-any-return]

    def refuse(self, kind: str, secret_hash: str, code: str, detail: str) -> None:
        self._refused.put((kind, secret_hash), (code, detail), REFUSAL_TTL_S)

    def block(self, ip: str, seconds: float) -> None:
        self._blocked.put(ip, time.monotonic() + seconds, seconds)

    def blocked_for(self, ip: str) -> float:
        """Seconds until `ip` may try secrets again (0: now)."""
        until = self._blocked.get(ip)
        return max(0.0, until - time.monotonic()) if until is not None else 0.0

    def clear(self) -> None:
        self._known.clear()


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
