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
# What a miner's model server can do beyond plain chat, as it declares on its polls
# (`capabilities=tools,json_schema`), and the letter of each in a job's queue list name:
# `<model>#<letters>` holds the jobs for `model` that need those capabilities.
LETTERS = {"json_object": "o", "json_schema": "s", "tools": "t"}
CAPABILITIES = tuple(LETTERS)
ROUTE_SEP = "#"
DECLARE_EVERY_S = 5.0
PRUNE_EVERY_S = 60.0
# (prefix, wallet, model) -> monotonic time written here; entries older than DECLARE_EVERY_S are
# dropped whenever it holds more than _MEMORY entries
_declared: dict[tuple[str, int, str], float] = {}
_MEMORY = 4096
_pruned: dict[str, float] = {}  # prefix -> monotonic time this process last pruned its sets

# KEYS: the wallet's models, seen, since, then one per capability declared.
# ARGV: now, ttl, cap, model. 1 if declared, 0 if the wallet already declares `cap` other models.
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
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], now, model) end
return 1
"""

# KEYS: seen, since, then one per capability. ARGV: the oldest declaration still served.
_PRUNE = """
for i = 1, #KEYS do
  if i ~= 2 then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[1]) end
end
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


def _cap_key(prefix: str, capability: str) -> str:
    return f"{prefix}:models:can:{capability}"


def parse_capabilities(text: str | None) -> tuple[str, ...]:
    """The known capabilities in a poll's `capabilities` (comma-separated; others ignored)."""
    asked = {c.strip() for c in (text or "").split(",")}
    return tuple(c for c in CAPABILITIES if c in asked)


def routes(model: str, capabilities: tuple[str, ...]) -> list[str]:
    """The queue lists a miner serving `model` with these capabilities reads before the model's
    own: every combination of them, the most demanding first."""
    letters = sorted(LETTERS[c] for c in capabilities)
    out = []
    for mask in range(1, 1 << len(letters)):
        out.append("".join(x for i, x in enumerate(letters) if mask >> i & 1))
    out.sort(key=lambda combo: (-len(combo), combo))
    return [model + ROUTE_SEP + combo for combo in out]


async def declare(redis: Redis, prefix: str, model: str, *, wallet: int = 0, cap: int = 0,
                  ttl_s: int = 180, capabilities: tuple[str, ...] = ()) -> None:
    """Record that `wallet` serves `model` now (with these capabilities); 400 too_many_models
    if the wallet already declared `cap` other models within ttl_s (cap 0: no cap)."""
    mono = time.monotonic()
    memo = (prefix, wallet, model + ROUTE_SEP + ",".join(capabilities))
    if mono - _declared.get(memo, -DECLARE_EVERY_S) < DECLARE_EVERY_S:
        return
    now = int(time.time())
    seen, since = _keys(prefix)
    ok = await redis.eval(_DECLARE, 3 + len(capabilities), f"{prefix}:models:wallet:{wallet}",
                          seen, since, *[_cap_key(prefix, c) for c in capabilities],
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
    await redis.eval(_PRUNE, 2 + len(CAPABILITIES), *_keys(prefix),
                     *[_cap_key(prefix, c) for c in CAPABILITIES], int(time.time()) - ttl_s)


async def missing(redis: Redis, prefix: str, ttl_s: int, model: str,
                  capabilities: list[str]) -> list[str]:
    """Those of `capabilities` no miner declared with `model` within ttl_s seconds."""
    floor = time.time() - ttl_s
    out = []
    for capability in capabilities:
        score = await redis.zscore(_cap_key(prefix, capability), model)
        if score is None or score < floor:
            out.append(capability)
    return out


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
