"""The miner job queue on Redis: the fast path that hands job ids to long-polling miners.

Redis holds only job ids. The database owns job state, leases and attempts (app/leases), so a
lost or flushed Redis loses no job: the reconciler pushes back what the DB says is queued.
Lists are consumed from the right: new jobs LPUSH to the back of the line, redeliveries RPUSH to
the front. A miner's long-poll BRPOPs one kind's list and takes the rest of a batch with one
RPOP; idle long-polls yield to waiting chat (app/idle/kind.py). The lists share one hash tag,
so commands over several of them stay in one Redis Cluster slot (app/redis_client.py).
"""

from __future__ import annotations

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
        # One hash tag for every kind's list, so a BRPOP over several stays in one Redis Cluster
        # slot; the tag names this deployment's queue, so other keys still spread.
        return f"{self.prefix}:{{{self.prefix}:q}}:{kind}"

    async def push(self, kind: str, *job_ids: str) -> None:
        if job_ids:
            await self.redis.lpush(self.key(kind), *job_ids)

    async def push_front(self, kind: str, *job_ids: str) -> None:
        if job_ids:
            await self.redis.rpush(self.key(kind), *job_ids)

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
        # One message for a whole batch: waiters match any of the ids in it (app/notify.py).
        await self.redis.publish(self.done_channel, " ".join(job_ids))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
