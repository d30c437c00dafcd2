"""The miner job queue on Redis: the fast path that hands job ids to long-polling miners.

Redis holds only job ids. The database owns job state, leases and attempts (app/leasing.py),
so a lost or flushed Redis loses no job: the reconciler pushes back what the DB says is queued.
Lists are consumed from the right: new jobs LPUSH to the back of the line, redeliveries RPUSH to
the front. One BRPOP over several lists takes them in the order given, so chat comes before idle.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

KINDS = ("chat", "idle")


class JobQueue:
    def __init__(self, redis: Redis, prefix: str = "mia", *, blocking: Redis | None = None):
        self.redis = redis
        self.blocking = blocking or redis  # for BRPOP: its socket timeout outlasts the wait
        self.prefix = prefix
        self.done_channel = f"{prefix}:events:done"

    def key(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        return f"{self.prefix}:q:{kind}"

    async def push(self, kind: str, *job_ids: str) -> None:
        if job_ids:
            await self.redis.lpush(self.key(kind), *job_ids)

    async def push_front(self, kind: str, *job_ids: str) -> None:
        if job_ids:
            await self.redis.rpush(self.key(kind), *job_ids)

    async def pop(self, kinds: Sequence[str], timeout_s: float) -> tuple[str, str] | None:
        """Next (kind, job_id), waiting up to timeout_s seconds; never busy-polls."""
        keys = [self.key(k) for k in kinds]
        if timeout_s <= 0:
            for kind, key in zip(kinds, keys, strict=True):
                job_id = await self.redis.rpop(key)
                if job_id is not None:
                    return kind, _text(job_id)
            return None
        item = await self.blocking.brpop(keys, timeout=timeout_s)
        if item is None:
            return None
        key, job_id = item
        return kinds[keys.index(_text(key))], _text(job_id)

    async def pop_many(self, kind: str, most: int, timeout_s: float) -> list[str]:
        """Up to `most` job ids of one kind, oldest first, waiting up to timeout_s seconds for the
        first; never busy-polls. The rest are taken at once (RPOP with a count) if there."""
        key = self.key(kind)
        if timeout_s <= 0:
            found = await self.redis.rpop(key, most)
            return [_text(v) for v in found or ()]
        item = await self.blocking.brpop([key], timeout=timeout_s)
        if item is None:
            return []
        ids = [_text(item[1])]
        if most > 1:
            ids += [_text(v) for v in await self.redis.rpop(key, most - 1) or ()]
        return ids

    async def members(self, kind: str) -> set[str]:
        return {_text(v) for v in await self.redis.lrange(self.key(kind), 0, -1)}

    async def depth(self, kind: str) -> int:
        return int(await self.redis.llen(self.key(kind)))

    async def publish_done(self, *job_ids: str) -> None:
        if len(job_ids) == 1:
            await self.redis.publish(self.done_channel, job_ids[0])
            return
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip for all
            for job_id in job_ids:
                pipe.publish(self.done_channel, job_id)
            await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
