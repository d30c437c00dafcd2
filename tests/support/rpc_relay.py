"""A JSON-RPC relay on 127.0.0.1 that records every request and forwards it to an upstream node:
the local stand-in for a private transaction relay (Flashbots Protect-style: eth_sendRawTransaction
in, forwarded to block builders) and a tap on the public endpoint. Served by chain.node's HTTP
server, with the relay in place of the eth-tester dispatcher."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

from chain.node import make_server


class Relay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def methods(self) -> list[str]:
        with self._lock:
            return [r.get("method", "") for r in self.requests]

    def raw_transactions(self) -> list[str]:
        with self._lock:
            return [r["params"][0] for r in self.requests
                    if r.get("method") == "eth_sendRawTransaction"]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def handle(self, request: Any) -> Any:
        """Record, forward, and answer what the upstream node answered."""
        with self._lock:
            self.requests.extend(request if isinstance(request, list) else [request])
        req = urllib.request.Request(self.upstream, data=json.dumps(request).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310 (127.0.0.1 only)
            return json.loads(answer.read())


@contextlib.contextmanager
def running_relay(upstream: str) -> Iterator[tuple[str, Relay]]:
    relay = Relay(upstream)
    server = make_server("127.0.0.1", 0, relay)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", relay
    finally:
        server.shutdown()
        server.server_close()
