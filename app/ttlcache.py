"""Per-process memories whose entries lapse: a bounded TTL map, and the bearer-secret cache the
context holds (its rules are explained in app/auth/cache.py, which uses it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

MAX_ENTRIES = 100_000  # beyond this a table starts over rather than grow without bound
REFUSAL_TTL_S = 60.0  # an unknown secret stays unknown (they are random); a revoked one revoked


class TTLCache:
    """A bounded dict whose entries lapse at a monotonic deadline."""

    def __init__(self) -> None:
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        item = self.item(key)
        return None if item is None else item[1]

    def item(self, key: Any) -> tuple[float, Any] | None:
        """(monotonic deadline, value), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        return item

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
        self.generation = 0  # bumped by clear(): a read begun before it must not be remembered
        self.due: set[tuple[str, str]] = set()  # used past half their TTL: re-read them soon
        self.refreshing: asyncio.Task[None] | None = None  # app/auth/cache.refresh_soon
        self._known = TTLCache()  # (kind, hash) -> principal
        # Apart from the known ones, so a flood of bogus secrets cannot push valid ones out.
        self._refused = TTLCache()  # (kind, hash) -> (error code, detail)
        self._blocked = TTLCache()  # client IP -> monotonic time its block ends

    def get(self, kind: str, secret_hash: str) -> Any | None:
        """The principal remembered for the secret; one used past half its TTL is marked due
        for a re-read in the background (app/auth/cache.py), so one in use never lapses."""
        item = self._known.item((kind, secret_hash))
        if item is None:
            return None
        if item[0] - time.monotonic() < self.ttl_s / 2:
            self.due.add((kind, secret_hash))
        return item[1]

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

    def forget(self, kind: str, secret_hash: str) -> None:
        self._known.discard((kind, secret_hash))

    def clear(self) -> None:
        self._known.clear()
        self.due.clear()
        self.generation += 1

    async def aclose(self) -> None:
        """Stops a background re-read (before the database it reads is closed)."""
        task, self.refreshing = self.refreshing, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
