"""Rate limits: a token bucket per API key, per wallet address and per client IP, in Redis.

One Redis check is one round trip: EVALSHA of the script below. A bucket holds `burst` tokens
and gains `count` tokens per `period_ms`. Its level is kept in units of 1/period_ms of a token,
so a request costs `period_ms` units and every millisecond adds `count` units: integers
throughout, no float drift, and a refill rate like 3/s is exact. Time is Redis's own clock
(TIME), the same for every API process. A bucket's key expires exactly when it would be full
again, so an absent key is a full bucket and idle callers leave nothing behind.

Blocks (enforce(), the limits the guards apply): a process takes up to block_ms' worth of a
rate's tokens from the shared bucket in one call (RateLimiter.block_size: at most MAX_BLOCK, one
for slow rates such as the per-minute ones, which work exactly as before) and spends them
locally, so a busy key or wallet costs one Redis call per block instead of one per request; a
refusal is remembered until the token Redis said is next due. No token is ever spent twice, so the limit still holds over
time; what blocks change is WHEN the tokens are spent. The bound: over any interval, a key
gets at most what the shared bucket would allow plus (block - 1) per API process (tokens a
process took earlier and spends now). The other way round, unspent tokens of a block lapse
(after the longer of BLOCK_LAPSE_S and 2 x block_ms; never spent late), and a process may
refuse while another still holds some: a caller spreading requests over P processes is never
refused below count x (1 - P x block_ms / (1000 x lapse)) per second of its rate
(block_ms=100: 80 % with 2 processes); a caller at its limit spends every block in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request

from app.errors import RateLimited

if TYPE_CHECKING:  # the context holds the limiter; only its type is needed here
    from app.context import AppContext

log = logging.getLogger("app.ratelimit")

# KEYS[1]: the bucket, the only key it touches (so it runs on a Redis Cluster as it is).
# ARGV: count, period_ms, burst, want[, now_ms (tests only; default Redis TIME)].
# Takes up to `want` whole tokens, as many as there are (at least one, else none).
# Returns {tokens taken (0: refused), ms until the next token when refused, whole tokens left}.
# Numbers stay far below 2^53 (checked in Rate), so Lua's doubles hold them exactly.
_SCRIPT = """
local count, period, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local function idiv(a, b) return (a - a % b) / b end
local now
if ARGV[5] then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + idiv(tonumber(t[2]), 1000)
end
local cap = burst * period
local level = cap
local state = redis.call('HMGET', KEYS[1], 'l', 't')
if state[1] then
  local old = tonumber(state[1])
  local elapsed = now - tonumber(state[2])
  if elapsed < 0 then elapsed = 0 end  -- a Redis failover to a host whose clock is behind
  -- compare before multiplying, so a long-idle bucket cannot grow past cap (or 2^53)
  if elapsed < idiv(cap - old + count - 1, count) then level = old + elapsed * count end
end
if level < period then
  return {0, idiv(period - level + count - 1, count), 0}
end
local taken = idiv(level, period)
if taken > want then taken = want end
level = level - taken * period
redis.call('HSET', KEYS[1], 'l', string.format('%d', level), 't', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], idiv(cap - level + count - 1, count))
return {taken, 0, idiv(level, period)}
"""

_EXACT = 2**50  # keeps now_ms * 1 and cap arithmetic well inside a double's 53-bit mantissa
MAX_BLOCK = 16  # the most tokens a process takes from a bucket at once
BLOCK_LAPSE_S = 1.0  # a block's unspent tokens are dropped after this, or twice block_ms if
# longer (so they are never spent late)
_MAX_HELD = 100_000  # buckets with tokens held in this process; beyond it start over


@dataclass(frozen=True)
class Rate:
    """`count` tokens per `period_ms`, at most `burst` saved up. count == 0 disables it."""

    count: int
    period_ms: int
    burst: int

    def __post_init__(self) -> None:
        if self.count < 0 or self.burst < 0 or self.period_ms <= 0:
            raise ValueError(f"invalid rate {self}")
        if self.burst * self.period_ms + self.count >= _EXACT:
            raise ValueError(f"rate {self} is too large to count exactly")

    @classmethod
    def per_second(cls, count: int, burst: int) -> Rate:
        return cls(count, 1000, burst)

    @classmethod
    def per_minute(cls, count: int, burst: int | None = None) -> Rate:
        return cls(count, 60_000, count if burst is None else burst)

    @property
    def enabled(self) -> bool:
        return self.count > 0 and self.burst > 0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_ms: int  # 0 when allowed
    remaining: int  # whole tokens left after this request
    taken: int = 1  # tokens taken from the shared bucket (a block: more than one)

    @property
    def retry_after_s(self) -> int:
        """Retry-After: whole seconds, rounded up (a client that waits this long gets in)."""
        return max(1, -(-self.retry_after_ms // 1000))


class RateLimiter:
    # Fails OPEN: when Redis is down or erroring, requests are let through unlimited (and a
    # warning is logged at most once per log_interval_s). A limiter that turned a Redis outage
    # into 503s everywhere would do more harm than the floods it stops; endpoints that need
    # Redis answer 503 on their own. After a failure, checks are skipped for skip_s so a hung
    # Redis does not add its command timeout to every request.
    def __init__(self, redis: Redis, prefix: str, *, log_interval_s: float = 60.0,
                 skip_s: float = 1.0, block_ms: int = 0):
        self._script = redis.register_script(_SCRIPT)
        self._block_ms = block_ms
        self._refills: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._lapse_s = max(BLOCK_LAPSE_S, 2 * block_ms / 1000)  # a block is block_ms' worth
        # (kind, ident) -> [tokens held, monotonic time they lapse, monotonic time the shared
        # bucket has its next token (after a refusal)]
        self._held: dict[tuple[str, str], list[float]] = {}
        self.round_trips = 0  # calls to Redis made (for tests and benchmarks)
        self._prefix = f"{prefix}:rl"
        self._log_interval_s = log_interval_s
        self._skip_s = skip_s
        self._skip_until = 0.0
        self._logged_at = float("-inf")
        self.failures = 0  # checks let through because Redis failed (for tests and metrics)

    def key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}:{kind}:{ident}"

    def block_size(self, rate: Rate) -> int:
        """Tokens enforce() takes from the shared bucket at once: block_ms' worth of the rate,
        at least 1, at most MAX_BLOCK and the burst."""
        return max(1, min(MAX_BLOCK, rate.burst, rate.count * self._block_ms // rate.period_ms))

    async def hit(self, kind: str, ident: str, rate: Rate, *,
                  now_ms: int | None = None) -> Decision:
        """Take one token from the (kind, ident) bucket, if there is one (one Redis call)."""
        return await self._take(kind, ident, rate, 1, now_ms)

    async def _take(self, kind: str, ident: str, rate: Rate, want: int,
                    now_ms: int | None = None) -> Decision:
        """Take up to `want` tokens (at least one) from the shared bucket. Decision.remaining
        is what the bucket has left; Decision.taken how many this call took."""
        if not rate.enabled:
            return Decision(True, 0, rate.burst)
        if self._skip_until and time.monotonic() < self._skip_until:
            self.failures += 1
            return Decision(True, 0, 0)
        args = [rate.count, rate.period_ms, rate.burst, want]
        if now_ms is not None:
            args.append(now_ms)
        self.round_trips += 1
        try:
            taken, retry_ms, remaining = await self._script(keys=[self.key(kind, ident)],
                                                            args=args)
        except RedisError as exc:
            self._failed(exc)
            return Decision(True, 0, 0)
        self._skip_until = 0.0
        return Decision(bool(taken), int(retry_ms), int(remaining), int(taken))

    async def enforce(self, kind: str, ident: str, rate: Rate, what: str) -> None:
        """Raise RateLimited (429 with Retry-After) when the bucket is empty. Spends a token
        this process holds if it has one; else takes a block (block_size) from Redis."""
        decision = await self._spend(kind, ident, rate)
        if not decision.allowed:
            raise RateLimited(f"too many requests {what}; retry after "
                              f"{decision.retry_after_s} s", retry_after_s=decision.retry_after_s)

    async def _spend(self, kind: str, ident: str, rate: Rate) -> Decision:
        block = self.block_size(rate)
        if block == 1 or not rate.enabled:  # slow rates: one exact call per request, as ever
            return await self._take(kind, ident, rate, 1)
        name = (kind, ident)
        while True:
            held = self._held.get(name)
            now = time.monotonic()
            if held is not None:
                if held[0] >= 1 and now < held[1]:
                    held[0] -= 1
                    return Decision(True, 0, 0)
                if now < held[2]:  # refused lately: no token in the shared bucket before then
                    return Decision(False, max(1, int((held[2] - now) * 1000)), 0)
            refill = self._refills.get(name)
            if refill is None:
                break
            # One block at a time per bucket and process: concurrent requests wait for the one
            # in flight and spend from it, rather than each taking a block (which drained the
            # shared bucket block-size times too fast and refused requests under the limit).
            await asyncio.shield(refill)
        refill = self._refills[name] = asyncio.get_running_loop().create_future()
        try:
            decision = await self._take(kind, ident, rate, block)
        finally:
            del self._refills[name]
            refill.set_result(None)
        now = time.monotonic()
        if decision.taken > 1:
            if len(self._held) >= _MAX_HELD:
                self._held.clear()  # a token dropped is a token not spent: never over the limit
            held = self._held.setdefault(name, [0, 0.0, 0.0])
            # concurrent requests may each have taken a block: pool them, lapsing together
            held[0] = (held[0] if now < held[1] else 0) + decision.taken - 1
            held[1], held[2] = now + self._lapse_s, 0.0
        elif not decision.allowed:
            self._held[name] = [0, 0.0, now + decision.retry_after_ms / 1000]
        return decision

    def _failed(self, exc: RedisError) -> None:
        self.failures += 1
        now = time.monotonic()
        self._skip_until = now + self._skip_s
        if now - self._logged_at >= self._log_interval_s:
            self._logged_at = now
            log.warning("rate limits are off while Redis fails (%s); requests are let through",
                        type(exc).__name__)


def client_ip(request: Request) -> str:
    # The peer address, or X-Forwarded-For's when the peer is a trusted proxy: the server
    # (uvicorn's proxy_headers with FORWARDED_ALLOW_IPS) has already resolved it into scope.
    return request.client.host if request.client else "unknown"


# --- the limits the guards and the sign-in endpoints apply, one call each ------------------------

async def limit_api_key(c: AppContext, api_key_id: int) -> None:
    s = c.settings
    await c.limiter.enforce("key", str(api_key_id),
                             Rate.per_second(s.rate_limit_key_per_s, s.rate_limit_key_burst),
                             "with this API key")


async def limit_address(c: AppContext, address: str) -> None:
    s = c.settings
    await c.limiter.enforce("addr", address.lower(),
                             Rate.per_second(s.rate_limit_address_per_s,
                                             s.rate_limit_address_burst),
                             "from this wallet")


async def limit_signin(request: Request) -> None:
    """Per client IP, before the body is read: /auth/nonce, /register_miner, /auth/login."""
    c: AppContext = request.app.state.ctx
    await c.limiter.enforce("signin", client_ip(request),
                             Rate.per_minute(c.settings.rate_limit_signin_per_min),
                             "sign-in requests from this address")


async def limit_anonymous_chat(request: Request) -> None:
    c: AppContext = request.app.state.ctx
    await c.limiter.enforce("anon", client_ip(request),
                             Rate.per_minute(c.settings.chat_anon_rate_per_min),
                             "anonymous chats from this address")


async def limit_metrics(request: Request) -> None:
    """Per client IP: /metrics (public unless METRICS_TOKEN is set)."""
    c: AppContext = request.app.state.ctx
    await c.limiter.enforce("metrics", client_ip(request),
                             Rate.per_minute(c.settings.rate_limit_metrics_per_min),
                             "metrics scrapes from this address")


async def limit_chain_reads(request: Request) -> None:
    """Per client IP: the public answers that read the chain (/burns/summary, .../verify)."""
    c: AppContext = request.app.state.ctx
    await c.limiter.enforce("chain", client_ip(request),
                             Rate.per_minute(c.settings.rate_limit_chain_reads_per_min),
                             "chain checks from this address")
