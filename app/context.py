"""Everything a request or a background loop needs, opened once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request

from app.auth.cache import AuthCache
from app.config import Settings
from app.db import Database
from app.notify import Notifier
from app.queue import JobQueue


@dataclass
class AppContext:
    settings: Settings
    db: Database
    redis: Redis
    queue: JobQueue
    notifier: Notifier
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. a web3 client for ERC-1271
    auth_cache: AuthCache = field(init=False)

    def __post_init__(self) -> None:
        self.auth_cache = AuthCache(self.settings.auth_cache_ttl_s)


def ctx(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def open_redis(url: str, *, command_timeout_s: float = 5.0,
               blocking_for_s: float | None = 0.0) -> Redis:
    """A command client answers within command_timeout_s or raises (so a hung Redis becomes a
    503, not a hung request). A blocking client (BRPOP) waits up to blocking_for_s more than
    that; blocking_for_s=None (a pub/sub listener) never times out a read."""
    timeout = None if blocking_for_s is None else command_timeout_s + blocking_for_s
    return Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=timeout,
                          health_check_interval=30, max_connections=10_000)
