"""Everything a request or a task needs, opened once per process by open_context(): the API's
lifespan and the arq worker's startup build the same AppContext the same way."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from arq.connections import ArqRedis
from redis.asyncio import Redis
from starlette.requests import Request

from app.chainlink import ChainLink, close_chain, open_chain
from app.config import Settings
from app.db import Database
from app.notify import Notifier
from app.relay import Relay
from app.queue import JobQueue
from app.ratelimit import RateLimiter
from app.redis_client import open_redis
from app.ttlcache import SecretCache

if TYPE_CHECKING:  # a type only: the treasury builds its handle itself, on first use
    from app.treasury.onchain import Treasury


@dataclass
class AppContext:
    settings: Settings
    db: Database
    redis: Redis  # commands; answers within REDIS_COMMAND_TIMEOUT_S
    queue: JobQueue
    notifier: Notifier
    limiter: RateLimiter
    arq: ArqRedis  # enqueues on the worker's queue (arq_queue_name), sharing `redis`'s pool
    auth_cache: SecretCache  # bearer secrets -> principals, refusals (app/auth/cache.py)
    relay: Relay  # streamed chunks from miners to the clients' streams (app/relay.py)
    chain: ChainLink | None = None  # with CHAIN_RPC_URL
    treasury: Treasury | None = None  # made by app/treasury/onchain.get_treasury on first use


def ctx(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def arq_queue_name(settings: Settings) -> str:
    """The worker's arq queue: under the Redis prefix, so deployments sharing a Redis stay apart."""
    return f"{settings.redis_prefix}:arq:queue"


@contextlib.asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[AppContext]:
    """Opens every resource (database pool, three Redis clients, the chain when configured) and
    closes them all on exit, also when opening fails half-way. The notifier is not started:
    the caller registers its channels first, then starts it."""
    async with contextlib.AsyncExitStack() as stack:
        db = Database(settings.database_url, pool_size=settings.db_pool_size,
                      command_timeout_s=settings.db_command_timeout_s,
                      pool_timeout_s=settings.db_pool_timeout_s)
        stack.push_async_callback(db.dispose)
        await db.open()
        timeout, cluster = settings.redis_command_timeout_s, settings.redis_cluster
        redis = open_redis(settings.redis_url, cluster=cluster, command_timeout_s=timeout)
        blocking = open_redis(settings.redis_url, cluster=cluster, command_timeout_s=timeout,
                              blocking_for_s=settings.miner_max_wait_s)
        listener = open_redis(settings.redis_url, cluster=cluster, blocking_for_s=None)
        for client in (redis, blocking, listener):
            stack.push_async_callback(client.aclose)
        queue = JobQueue(redis, settings.redis_prefix, blocking=blocking)
        notifier = Notifier(listener, queue.done_channel, queue.chunk_channel)
        stack.push_async_callback(notifier.stop)
        chain = open_chain(settings.chain_rpc_url, settings.erc1271_gas_limit)
        stack.push_async_callback(close_chain, chain)
        ctx = AppContext(
            settings=settings, db=db, redis=redis, queue=queue, notifier=notifier,
            limiter=RateLimiter(redis, settings.redis_prefix,
                                block_ms=settings.rate_limit_block_ms),
            # arq is not cluster-aware (README "Redis Cluster"): on a cluster it gets a plain
            # client of its own, which works where REDIS_URL's node holds its keys
            arq=(ArqRedis.from_url(settings.redis_url, default_queue_name=arq_queue_name(settings))
                 if cluster else ArqRedis(redis.connection_pool,
                                          default_queue_name=arq_queue_name(settings))),
            auth_cache=SecretCache(settings.auth_cache_ttl_s), chain=chain,
            relay=Relay(redis, settings.redis_prefix, queue.chunk_channel,
                        settings.stream_buffer_ttl_s))
        stack.push_async_callback(_close_treasury, ctx)  # closed before the chain it uses
        stack.push_async_callback(ctx.auth_cache.aclose)  # its re-read, before the database
        yield ctx


async def _close_treasury(ctx: AppContext) -> None:
    if ctx.treasury is not None:
        await ctx.treasury.aclose()
