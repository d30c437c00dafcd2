"""Everything a request or a background loop needs, opened once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request

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


def ctx(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def open_redis(url: str) -> Redis:
    # No socket timeout: long-polls block in BRPOP for up to the miner's wait.
    return Redis.from_url(url, socket_connect_timeout=2.0, health_check_interval=30,
                          max_connections=10_000)
