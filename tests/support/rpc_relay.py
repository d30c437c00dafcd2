"""A JSON-RPC relay on 127.0.0.1 that records every request and forwards it to an upstream node:
the local stand-in for a private transaction relay (Flashbots Protect-style: eth_sendRawTransaction
in, forwarded to block builders) and a tap on the public endpoint."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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

    def forward(self, body: bytes) -> bytes:
        parsed = json.loads(body or b"null")
        with self._lock:
            self.requests.extend(parsed if isinstance(parsed, list) else [parsed])
        req = urllib.request.Request(self.upstream, data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310 (127.0.0.1 only)
            return answer.read()  # type: ignore[no-any-return]


@contextlib.contextmanager
def running_relay(upstream: str) -> Iterator[tuple[str, Relay]]:
    relay = Relay(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            payload = relay.forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", relay
    finally:
        server.shutdown()
        server.server_close()
