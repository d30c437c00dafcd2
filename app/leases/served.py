"""The models the network serves now: what polling miners declare (`model` on their lease polls).

A sorted set in Redis, model -> when a miner last declared it, shared by every API process; a
model is served while some miner declared it within MODEL_TTL_S. Each process writes a model at
most once per DECLARE_EVERY_S per wallet, so a poll costs no extra Redis round trip most of the
time. `since` keeps when each model was first seen (OpenAI's `created`).

A wallet may declare at most MINER_MAX_MODELS models within MODEL_TTL_S (its own sorted set, which
expires with its last declaration): without a cap one wallet declared 3,000 names in 14 s, and
GET /v1/models listed whatever it made up. Names nobody declared within MODEL_TTL_S are pruned
from the shared sets (at most once per PRUNE_EVERY_S per process), and this process's memory of
what it wrote is bounded the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from app.errors import BadRequest

MODEL_NAME = re.compile(r"^[A-Za-z0-9._:/@+\-]{1,128}$")
DECLARE_EVERY_S = 5.0
PRUNE_EVERY_S = 60.0
# (prefix, wallet, model) -> monotonic time written here; entries older than DECLARE_EVERY_S are
# dropped whenever it holds more than _MEMORY entries
_declared: dict[tuple[str, int, str], float] = {}
_MEMORY = 4096
_pruned: dict[str, float] = {}  # prefix -> monotonic time this process last pruned its sets

# KEYS: the wallet's models, seen, since. ARGV: now, ttl, cap, model.
# 1 if declared, 0 if the wallet already declares `cap` other models.
_DECLARE = """
local now, ttl, cap, model = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if cap > 0 and not redis.call('ZSCORE', KEYS[1], model)
   and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now, model)
redis.call('EXPIRE', KEYS[1], ttl + 1)
redis.call('ZADD', KEYS[2], now, model)
redis.call('ZADD', KEYS[3], 'NX', now, model)
return 1
"""

# KEYS: seen, since. ARGV: the oldest declaration still served.
_PRUNE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
redis.call('ZINTERSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'WEIGHTS', 1, 0)
return 1
"""


class TooManyModels(BadRequest):
    code = "too_many_models"


@dataclass(frozen=True)
class Served:
    model: str
    last_seen: int  # unix seconds
    since: int  # unix seconds: first declared


def _keys(prefix: str) -> tuple[str, str]:
    return f"{prefix}:models:seen", f"{prefix}:models:since"


async def declare(redis: Redis, prefix: str, model: str, *, wallet: int = 0, cap: int = 0,
                  ttl_s: int = 180) -> None:
    """Record that `wallet` serves `model` now; 400 too_many_models if the wallet already
    declared `cap` other models within ttl_s (cap 0: no cap)."""
    mono = time.monotonic()
    memo = (prefix, wallet, model)
    if mono - _declared.get(memo, -DECLARE_EVERY_S) < DECLARE_EVERY_S:
        return
    now = int(time.time())
    seen, since = _keys(prefix)
    ok = await redis.eval(_DECLARE, 3, f"{prefix}:models:wallet:{wallet}", seen, since,
                          now, ttl_s, cap, model)
    if not int(ok):
        raise TooManyModels(f"this wallet already declares {cap} models (MINER_MAX_MODELS); a "
                            f"model it stops declaring is forgotten after {ttl_s} s "
                            "(MODEL_TTL_S)", extra={"param": "model"})
    if len(_declared) >= _MEMORY:
        for key in [k for k, t in _declared.items() if mono - t >= DECLARE_EVERY_S]:
            del _declared[key]
    _declared[memo] = mono
    if mono - _pruned.get(prefix, -PRUNE_EVERY_S) >= PRUNE_EVERY_S:
        _pruned[prefix] = mono
        await prune(redis, prefix, ttl_s)


async def prune(redis: Redis, prefix: str, ttl_s: int) -> None:
    """Forget models nobody declared within ttl_s, in both shared sets."""
    await redis.eval(_PRUNE, 2, *_keys(prefix), int(time.time()) - ttl_s)


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


async def one(redis: Redis, prefix: str, ttl_s: int, model: str) -> Served | None:
    """The model if some miner declared it within ttl_s seconds, else None."""
    seen, since = _keys(prefix)
    score = await redis.zscore(seen, model)
    if score is None or score < time.time() - ttl_s:
        return None
    first = await redis.zscore(since, model)
    return Served(model=model, last_seen=int(score), since=int(first or score))


async def is_served(redis: Redis, prefix: str, ttl_s: int, model: str) -> bool:
    score = await redis.zscore(_keys(prefix)[0], model)
    return score is not None and score >= time.time() - ttl_s


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
