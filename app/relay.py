"""Streamed output on its way from a miner to a client: a short-lived buffer in Redis.

A miner posts chunks on its lease (POST /job/{id}/chunk); each is appended here in order and its
job id is published on the chunk channel, which wakes whichever API process holds the client's
stream (app/notify.py); that process reads the buffer from where it left off (app/v1/relay.py).
The buffer, not the pub/sub message, is what carries the text, so a lost message delays a chunk
by one re-check and loses nothing. Entries are "<lease id>\\n<text>": a stream can tell output of
an earlier delivery from a redelivery's.

Per lease, chunks are numbered from 0. A number already taken is a retry and is ignored; one past
the next expected is a gap and is refused (the miner resends from the next expected). The check,
the append and the wake-up are one Lua script, so two posts of one lease cannot interleave.
The keys of one job share a hash tag (one Redis Cluster slot).

What a lease may put here is bounded (Budget, checked in the same script): a chunk count, a byte
budget, and an expiry at the lease's hard end plus STREAM_BUFFER_TTL_S that chunks cannot push
further. Without them one wallet with 8 leases pushed 200 MB into Redis in 15 s, each chunk
renewing the expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS: buffer, seq hash, watch mark. ARGV: lease id, seq, text, expire-at (unix s), channel,
# job id, most chunks, most bytes. The seq hash keeps, per lease, the next number and the bytes
# taken ("<lease>:b"), so the budget holds however the chunks are cut.
APPEND = """
local nxt = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
local watching = redis.call('EXISTS', KEYS[3])
if seq ~= nxt then
    return {nxt, seq < nxt and 0 or -1, watching}
end
if nxt >= tonumber(ARGV[7]) then
    return {nxt, -2, watching}
end
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[1] .. ':b') or '0')
if used + string.len(ARGV[3]) > tonumber(ARGV[8]) then
    return {nxt, -3, watching}
end
redis.call('RPUSH', KEYS[1], ARGV[1] .. '\\n' .. ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], nxt + 1, ARGV[1] .. ':b', used + string.len(ARGV[3]))
redis.call('EXPIREAT', KEYS[1], ARGV[4])
redis.call('EXPIREAT', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {nxt + 1, 1, watching}
"""
WATCH_TTL_S = 30  # a reader refreshes its mark more often than this
READ_AT_MOST = 64  # chunks per read of the buffer


@dataclass(frozen=True)
class Appended:
    next_seq: int
    # "appended", "repeat" (seq already taken), "gap" (seq past next_seq), "too_many" (the
    # lease's chunk cap is reached) or "too_big" (this chunk would pass the lease's byte budget)
    outcome: str
    watching: bool  # a client's stream is reading this job now


@dataclass(frozen=True)
class Budget:
    """What one lease may stream: chunks, UTF-8 bytes, and until when (unix seconds: the
    lease's hard end; the buffer expires STREAM_BUFFER_TTL_S after it, never later)."""
    max_chunks: int
    max_bytes: int
    ends_at: float


@dataclass(frozen=True)
class Entry:
    lease_id: str
    text: str


class Relay:
    def __init__(self, redis: Redis, prefix: str, channel: str, ttl_s: int):
        self.redis = redis
        self.prefix = prefix
        self.channel = channel
        self.ttl_s = ttl_s  # past the lease's hard end (Budget.ends_at)
        self._append = redis.register_script(APPEND)

    def _keys(self, job_id: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:stream:{{{job_id}}}"
        return f"{base}:buf", f"{base}:seq", f"{base}:watch"

    async def append(self, job_id: str, lease_id: str, seq: int, text: str,
                     budget: Budget) -> Appended:
        nxt, code, watching = await self._append(
            keys=list(self._keys(job_id)),
            args=[lease_id, seq, text, int(budget.ends_at) + self.ttl_s, self.channel, job_id,
                  budget.max_chunks, budget.max_bytes])
        outcome = {1: "appended", 0: "repeat", -1: "gap", -2: "too_many",
                   -3: "too_big"}[int(code)]
        return Appended(next_seq=int(nxt), outcome=outcome, watching=bool(watching))

    async def read(self, job_id: str, start: int, most: int = READ_AT_MOST) -> list[Entry]:
        """Up to `most` of the job's chunks from index `start` on, in the order they were
        appended (a slow reader holds one slice in memory, not the whole buffer)."""
        raw = await self.redis.lrange(self._keys(job_id)[0], start, start + most - 1)
        out = []
        for value in raw:
            text = value.decode() if isinstance(value, bytes) else value
            lease_id, _, chunk = text.partition("\n")
            out.append(Entry(lease_id=lease_id, text=chunk))
        return out

    async def mark_watched(self, job_id: str) -> None:
        await self.redis.set(self._keys(job_id)[2], 1, ex=WATCH_TTL_S)

    async def unmark_watched(self, job_id: str) -> None:
        await self.redis.delete(self._keys(job_id)[2])

    async def forget(self, job_id: str) -> None:
        await self.redis.delete(*self._keys(job_id))
