"""The models the network serves now: what polling miners declare (`model` on their lease polls).

A sorted set in Redis, model -> when a miner last declared it, shared by every API process; a
model is served while some miner declared it within MODEL_TTL_S. Each process writes a model at
most once per DECLARE_EVERY_S, so a poll costs no extra Redis round trip most of the time.
`since` keeps when each model was first seen (OpenAI's `created`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from redis.asyncio import Redis

MODEL_NAME = re.compile(r"^[A-Za-z0-9._:/@+\-]{1,128}$")
DECLARE_EVERY_S = 5.0
_declared: dict[tuple[str, str], float] = {}  # (prefix, model) -> monotonic time written here


@dataclass(frozen=True)
class Served:
    model: str
    last_seen: int  # unix seconds
    since: int  # unix seconds: first declared


def _keys(prefix: str) -> tuple[str, str]:
    return f"{prefix}:models:seen", f"{prefix}:models:since"


async def declare(redis: Redis, prefix: str, model: str) -> None:
    mono = time.monotonic()
    if mono - _declared.get((prefix, model), -DECLARE_EVERY_S) < DECLARE_EVERY_S:
        return
    _declared[(prefix, model)] = mono
    now = int(time.time())
    seen, since = _keys(prefix)
    await redis.zadd(seen, {model: now})
    await redis.zadd(since, {model: now}, nx=True)


async def served(redis: Redis, prefix: str, ttl_s: int) -> list[Served]:
    """Every model some miner declared within ttl_s seconds, by name."""
    seen, since = _keys(prefix)
    now = int(time.time())
    recent = await redis.zrangebyscore(seen, now - ttl_s, "+inf", withscores=True)
    if not recent:
        return []
    names = [_text(m) for m, _ in recent]
    firsts = await redis.zmscore(since, names)
    out = [Served(model=name, last_seen=int(score), since=int(first or score))
           for name, (_, score), first in zip(names, recent, firsts, strict=True)]
    return sorted(out, key=lambda s: s.model)


async def is_served(redis: Redis, prefix: str, ttl_s: int, model: str) -> bool:
    score = await redis.zscore(_keys(prefix)[0], model)
    return score is not None and score >= time.time() - ttl_s


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
