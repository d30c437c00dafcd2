"""A small per-process map whose entries expire after a fixed time (monotonic clock)."""

from __future__ import annotations

import time
from typing import Any

MAX_ENTRIES = 100_000  # beyond this the cache starts over rather than grow without bound


class TTLCache:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        return item[1]

    def put(self, key: str, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._items) >= MAX_ENTRIES:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl_s, value)

    def clear(self) -> None:
        self._items.clear()
