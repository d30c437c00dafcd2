"""Errors on /v1 in OpenAI's shape, {"error": {"message", "type", "code", "param"}}, with the
status codes every other endpoint answers; the OpenAI SDKs raise their usual exception for each
(BadRequestError, AuthenticationError, NotFoundError, RateLimitError, ...)."""

from __future__ import annotations

from typing import Any

from app.errors import AppError

PREFIX = "/v1/"
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error",
         413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def applies(path: str) -> bool:
    return path.startswith(PREFIX)


def body(err: AppError) -> dict[str, Any]:
    param = err.extra.get("param")
    fields = err.extra.get("fields")
    if param is None and fields:
        param = fields[0]["field"]  # the first field validation refused
    kind = TYPES.get(err.status, "server_error" if err.status >= 500 else "invalid_request_error")
    return {"error": {"message": err.detail, "type": kind, "code": err.code, "param": param},
            "request_id": err.extra.get("request_id")}
