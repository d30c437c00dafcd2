"""One ASGI middleware for every HTTP request: its request id (kept from a well-formed
X-Request-Id, else made), returned as X-Request-Id and set in the log context, and its duration
in mia_http_request_duration_seconds by route template (never the raw path: /chat/<any id> is
one label, an unknown path is "unmatched"), method and status class."""

from __future__ import annotations

import logging
import time
from typing import Any

from app.observability import context, metrics, tracing

log = logging.getLogger("app.http")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
HEADER = b"x-request-id"


def _route(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class RequestMiddleware:
    def __init__(self, app: Any, *, record: bool = True, on_end: Any = None) -> None:
        self.app = app
        self.record = record  # METRICS_ENABLED
        self.on_end = on_end  # on_end(scope) after each request (the pool gauges), or None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == HEADER:
                given = value.decode("latin-1")
                break
        rid = context.new_request_id(given)
        scope.setdefault("state", {})["request_id"] = rid
        context.clear()  # nothing of an earlier request on this task
        token = context._vars["request_id"].set(rid)
        raw = rid.encode()
        start = time.perf_counter()
        wall = time.time_ns() if tracing.enabled() else 0
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if not any(k.lower() == HEADER for k, _ in headers):
                    headers.append((HEADER, raw))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The log context stays set: the server's error line and the 500's body (rendered
            # outside this middleware, app/main.py) still carry the request id.
            self._end(scope, 500, start, wall)
            raise
        self._end(scope, status, start, wall)
        context._vars["request_id"].reset(token)

    def _end(self, scope: dict[str, Any], status: int, start: float, wall: int) -> None:
        if wall:  # tracing: the request joins its job's trace, if it is about one
            job_id = context._vars["job_id"].get()
            if job_id is not None:
                route = _route(scope)
                tracing.record(f"{scope['method']} {route}",
                               "idle" if route.startswith("/idle") else "chat", job_id,
                               start_ns=wall, **{"http.status_code": status})
        if self.record:
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.observe_http(_route(scope), method, status, time.perf_counter() - start)
            if self.on_end is not None:
                self.on_end(scope)
        if status >= 500:
            log.warning("%s %s answered %d", scope["method"], _route(scope), status)
        elif status >= 400:
            log.info("%s %s answered %d", scope["method"], _route(scope), status)
