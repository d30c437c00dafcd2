"""Per-process memories whose entries lapse: a bounded TTL map, and the bearer-secret cache the
context holds (its rules are explained in app/auth/cache.py, which uses it)."""

from __future__ import annotations

import time
from typing import Any

MAX_ENTRIES = 100_000  # beyond this a table starts over rather than grow without bound
REFUSAL_TTL_S = 60.0  # an unknown secret stays unknown (they are random); a revoked one revoked


class TTLCache:
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

    def discard(self, key: Any) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


class SecretCache:
    """Who bearer secrets stand for, by (kind, hash); refused secrets; client IPs whose failed
    authentications ran out of budget (app/auth/cache.py says why each exists)."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._known = TTLCache()  # (kind, hash) -> principal
        # Apart from the known ones, so a flood of bogus secrets cannot push valid ones out.
        self._refused = TTLCache()  # (kind, hash) -> (error code, detail)
        self._blocked = TTLCache()  # client IP -> monotonic time its block ends

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
