"""Redis clients for one server or a Redis Cluster (REDIS_CLUSTER), opened one way.

Cluster rules the rest of app/ keeps: every command or script that touches several keys touches
keys of one hash slot, by giving them one hash tag (`mia:{mia:q}:chat` and `mia:{mia:q}:idle`
share the tag `mia:q`); single-key commands and scripts spread over the cluster as they like.
Pub/sub uses classic PUBLISH/SUBSCRIBE, which a cluster broadcasts to every node, so a listener
connected to any one node hears what is published through any other.

arq (the worker's task queue) is not cluster-aware: its keys cannot share a hash tag, so it needs
a Redis of its own (see the README's "Redis Cluster").
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from redis._parsers import AsyncCommandsParser
from redis.asyncio import Connection, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import TimeoutError as RedisTimeout

MAX_CONNECTIONS = 10_000  # per process (per node on a cluster); each long-poll holds one


class _CommandTable(AsyncCommandsParser):
    # redis-py re-reads COMMAND from the first primary after every topology refresh, and a
    # command fails when that read fails: while that one node hung, every command of the client
    # failed, whichever node it was for. The table does not change with the topology.
    async def initialize(self, node: ClusterNode | None = None) -> None:
        if not self.commands:
            await super().initialize(node)
        elif node is not None:
            self.node = node  # asked for keys redis-py cannot locate itself (none of ours)


class TimedConnection(Connection):
    """redis-py's connection, writing a command under asyncio.timeout instead of asyncio.wait_for.
    With a socket timeout set, redis-py 5 wraps every write in wait_for, which on Python 3.11
    makes a Task for it and takes one more turn of the event loop per command: in a profile of
    `python -m bench half-load` that was about 5 % of an API process's CPU. The same bound
    holds: a write that cannot finish within socket_timeout drops the connection and raises
    redis' TimeoutError, as before. Reads already use a timeout without a task."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            return await super().send_packed_command(command, check_health)
        try:
            async with asyncio.timeout(timeout):
                self.socket_timeout = None  # the parent writes directly, under our timeout
                try:
                    await super().send_packed_command(command, check_health)
                finally:
                    self.socket_timeout = timeout
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeout("Timeout writing to socket") from None


class ClusterClient(RedisCluster):
    """redis-py 5's asyncio RedisCluster, plus the PUBLISH it lacks and a command table that
    survives one hung node."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.commands_parser = _CommandTable()

    async def publish(self, channel: str, message: Any) -> int:
        """The subscribers on the node that took it (the cluster still delivers it to all)."""
        return cast(int, await self.execute_command("PUBLISH", channel, message,
                                                    target_nodes=RedisCluster.RANDOM))


def open_redis(url: str, *, cluster: bool = False, command_timeout_s: float = 5.0,
               blocking_for_s: float | None = 0.0) -> Redis:
    """A command client answers within command_timeout_s or raises (so a hung Redis becomes a
    503, not a hung request). A blocking client (BRPOP) waits up to blocking_for_s more than
    that; blocking_for_s=None (a pub/sub listener) never times out a read.

    cluster: `url` names one node and the client finds the others. A listener is still a plain
    connection to that node, since redis-py 5's asyncio cluster client has no pub/sub and
    classic pub/sub reaches every node anyway. The cluster client speaks the commands app/ uses
    with the same signatures, so it is typed as Redis for its callers."""
    timeout = None if blocking_for_s is None else command_timeout_s + blocking_for_s
    options: dict[str, Any] = dict(socket_connect_timeout=2.0, socket_timeout=timeout,
                                   health_check_interval=30, max_connections=MAX_CONNECTIONS)
    if cluster and blocking_for_s is not None:
        # No retries, as with one Redis: redis-py's defaults retry a timed-out command with
        # backoff and a topology refresh (measured: a hung node held a 1 s command for over
        # 30 s, and failed commands to healthy nodes meanwhile). A failure is a 503 at once;
        # the client re-reads the topology before its next command.
        return cast(Redis, ClusterClient.from_url(url, cluster_error_retry_attempts=0,
                                                  connection_error_retry_attempts=0,
                                                  **options))
    if url.startswith("redis://"):  # TLS and unix sockets keep redis-py's own classes
        options["connection_class"] = TimedConnection
    return Redis.from_url(url, **options)
