"""Errors on /v1 in OpenAI's shape, {"error": {"message", "type", "code", "param"}}, with the
status codes every other endpoint answers, except that a request that does not validate is a 400
(OpenAI's), not our 422; the OpenAI SDKs raise their usual exception for each (BadRequestError,
AuthenticationError, NotFoundError, RateLimitError, ...).

The SDKs retry 409, 429 and 5xx answers by default (twice, for the Python SDK) unless the answer
says `x-should-retry: false`: it does for every error a retry cannot fix (a refused request, a
session whose history does not match, a job that failed every delivery), so a retry never makes
the network answer the same question again for nothing.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from app.errors import AppError
from app.web import JSONResponse

PREFIX = "/v1/"
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error",
         413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}
# errors a retry cannot fix; 408, 429 and 503 can be retried (the SDKs wait as told)
FINAL_CODES = {"job_failed"}
RETRYABLE = {408, 429}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def applies(path: str) -> bool:
    return path.startswith(PREFIX)


def param_of(field: str) -> str:
    """A validation error's field ("messages.0.content.str") in OpenAI's spelling
    ("messages[0].content"): indexes in brackets, pydantic's union tags dropped."""
    out = ""
    for part in field.split("."):
        if part.isdigit():
            out += f"[{part}]"
        elif _FIELD.match(part) and part not in _TYPE_TAGS:
            out += f".{part}" if out else part
    return out or "body"


def body(err: AppError) -> dict[str, Any]:
    param = err.extra.get("param")
    fields = err.extra.get("fields")
    message = err.detail
    if fields:
        spelled = [(param_of(f["field"]), f["message"]) for f in fields]
        if param is None:
            param = spelled[0][0]  # the first field validation refused
        message = "; ".join(f"{p}: {m}" for p, m in spelled[:5])
    status = status_of(err)
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": err.code, "param": param},
            "request_id": err.extra.get("request_id")}


def status_of(err: AppError) -> int:
    return 400 if err.status == 422 else err.status


def response(err: AppError) -> Response:
    headers = dict(err.headers)
    status = status_of(err)
    if (400 <= status < 500 and status not in RETRYABLE) or err.code in FINAL_CODES:
        headers["x-should-retry"] = "false"
    return JSONResponse(body(err), status_code=status, headers=headers)
