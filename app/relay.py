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
The keys of one job share a hash tag (one Redis Cluster slot) and expire STREAM_BUFFER_TTL_S after
the last chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

APPEND = """
local nxt = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
local watching = redis.call('EXISTS', KEYS[3])
if seq ~= nxt then
    return {nxt, seq < nxt and 0 or -1, watching}
end
redis.call('RPUSH', KEYS[1], ARGV[1] .. '\\n' .. ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], nxt + 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {nxt + 1, 1, watching}
"""
WATCH_TTL_S = 30  # a reader refreshes its mark more often than this


@dataclass(frozen=True)
class Appended:
    next_seq: int
    outcome: str  # "appended", "repeat" (seq already taken) or "gap" (seq past next_seq)
    watching: bool  # a client's stream is reading this job now


@dataclass(frozen=True)
class Entry:
    lease_id: str
    text: str


class Relay:
    def __init__(self, redis: Redis, prefix: str, channel: str, ttl_s: int):
        self.redis = redis
        self.prefix = prefix
        self.channel = channel
        self.ttl_s = ttl_s
        self._append = redis.register_script(APPEND)

    def _keys(self, job_id: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:stream:{{{job_id}}}"
        return f"{base}:buf", f"{base}:seq", f"{base}:watch"

    async def append(self, job_id: str, lease_id: str, seq: int, text: str) -> Appended:
        nxt, code, watching = await self._append(
            keys=list(self._keys(job_id)),
            args=[lease_id, seq, text, self.ttl_s, self.channel, job_id])
        outcome = {1: "appended", 0: "repeat", -1: "gap"}[int(code)]
        return Appended(next_seq=int(nxt), outcome=outcome, watching=bool(watching))

    async def read(self, job_id: str, start: int) -> list[Entry]:
        """The job's chunks from index `start` on, in the order they were appended."""
        raw = await self.redis.lrange(self._keys(job_id)[0], start, -1)
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
