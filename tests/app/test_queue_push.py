"""A push onto a model's list records the model among the kind's lists in the same round trip
(app/queue.py PUSH_ROUTED): the order of the lists and the set of models are what the two
commands made."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from app.queue import SCRIPT_IDS_AT_MOST, JobQueue


async def test_a_model_push_lands_in_order_and_names_its_model(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    queue = JobQueue(redis, prefix)
    sent: list[str] = []
    try:
        await queue.push("chat", "a1", "a2", model="m-a")
        await queue.push_front("chat", "a0", model="m-a")
        await queue.push("chat", "c1")  # the common list: no model recorded
        await queue.push_front("idle", "i0", model="m-b")
        assert await queue.models("chat") == {"m-a"}
        assert await queue.models("idle") == {"m-b"}
        # each pushed once; a redelivery (front) comes out before the new ones
        assert await redis.lrange(queue.key("chat", "m-a"), 0, -1) == [b"a2", b"a1", b"a0"]
        assert await queue.pop_many("chat", 5, 0, model="m-a") == ["a0", "a1", "a2"]
        assert await queue.members("chat") == {"c1"}

        # past what one script call takes: two commands, the same outcome
        sent = [f"x{n}" for n in range(SCRIPT_IDS_AT_MOST + 5)]
        await queue.push("chat", *sent, model="m-c")
        assert await queue.models("chat") == {"m-a", "m-c"}
        assert await redis.llen(queue.key("chat", "m-c")) == len(sent)
        assert await queue.pop_many("chat", 3, 0, model="m-c") == sent[:3]
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
