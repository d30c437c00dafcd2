"""The app served by a real uvicorn on 127.0.0.1, in a thread, for what needs real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

from app.config import Settings
from app.localredis import free_port
from app.main import create_app


@contextlib.contextmanager
def live_server(settings: Settings, **options: Any) -> Iterator[str]:
    """options: more uvicorn.Config arguments, e.g. app.serving.uvicorn_limits(settings) to
    serve as `mia serve` does."""
    with live_uvicorn(settings, **options) as (url, _):
        yield url


@contextlib.asynccontextmanager
async def live_server_beside(settings: Settings, **options: Any) -> AsyncIterator[str]:
    """live_server for a test whose own event loop runs an app on the same database (e.g.
    running_app): the server is stopped without blocking that loop. A blocking join could wait
    out its whole timeout (15 s): the in-process app, frozen mid-transaction by the join, held
    SQLite's write lock that the server's own shutdown (its lease reaper) was waiting for."""
    url, server, thread = _start(settings, options)
    try:
        yield url
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 15)


@contextlib.contextmanager
def live_uvicorn(settings: Settings, **options: Any) -> Iterator[tuple[str, uvicorn.Server]]:
    """live_server's URL and the uvicorn.Server itself (its server_state: connections, tasks)."""
    url, server, thread = _start(settings, options)
    try:
        yield url, server
    finally:
        server.should_exit = True
        thread.join(15)


def _start(settings: Settings, options: dict[str, Any]
           ) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread
