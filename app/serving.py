"""The HTTP server's limits and timeouts, from Settings, for `mia serve` (app/cli.py)."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.http1 import TurnWritesHttpToolsProtocol


def uvicorn_limits(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config."""
    return {
        # Idle keep-alive connections are cheap; closing them before a load balancer does
        # (AWS ALB: 60 s) makes it send requests into closing sockets (502s).
        "timeout_keep_alive": settings.server_keepalive_s,
        # On SIGTERM: stop accepting, let in-flight requests (long-polls included) finish for
        # this long, then cancel them. The orchestrator's kill grace period should be longer.
        "timeout_graceful_shutdown": settings.server_graceful_shutdown_s or None,
        # Per process: connections plus in-flight requests; beyond it uvicorn answers a plain
        # 503 instead of letting file descriptors and the Redis pool run out.
        "limit_concurrency": settings.server_max_connections or None,
        # X-Forwarded-For is resolved by the app itself (create_app, FORWARDED_ALLOW_IPS), the
        # same under any server; uvicorn would otherwise apply its own env-read trust list.
        "proxy_headers": False,
        # With --workers N, a worker that has not started serving within this many seconds is
        # killed and replaced; uvicorn's 5 s is less than the app's start on a busy 2-core host.
        "timeout_worker_healthcheck": 60,
        # A response's head and body in one write (app/http1.py; SERVER_TURN_WRITES=false:
        # uvicorn's own protocol, which writes them apart)
        "http": TurnWritesHttpToolsProtocol if settings.server_turn_writes else "auto",
    }


def granian_server(settings: Settings, host: str, port: int, workers: int) -> Any:
    """The same app and limits on granian (SERVER_IMPL=granian; measured, not the default):
    backpressure stands in for limit_concurrency, workers_kill_timeout for the graceful
    shutdown; granian has no idle keep-alive timeout of its own."""
    from granian.constants import Interfaces
    from granian.server import Server

    return Server("app.main:create_app", address=host, port=port, interface=Interfaces.ASGI,
                  workers=workers, factory=True, backpressure=settings.server_max_connections or None,
                  workers_kill_timeout=settings.server_graceful_shutdown_s or None,
                  log_level=settings.log_level.lower())
