"""One error hierarchy, rendered in one place as {"error": code, "detail": text}."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


class BadRequest(AppError):
    status, code = 400, "bad_request"


class ValidationFailed(AppError):
    status, code = 422, "validation_error"


class Unauthorized(AppError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str, *, code: str | None = None, **kw: Any):
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, code=code, **kw)


class PaymentRequired(AppError):
    """Not enough balance (insufficient_balance) or a key past its monthly limit
    (key_limit_reached); `extra` says how much there is and how much was needed."""
    status, code = 402, "payment_required"


class Forbidden(AppError):
    status, code = 403, "forbidden"


class NotFound(AppError):
    status, code = 404, "not_found"


class Conflict(AppError):
    status, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status, code = 413, "payload_too_large"


class RateLimited(AppError):
    status, code = 429, "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(detail, code=code,
                         headers={"Retry-After": str(max(1, retry_after_s))})


class ServiceUnavailable(AppError):
    status, code = 503, "service_unavailable"


def queue_unavailable() -> ServiceUnavailable:
    """What a request that needed Redis (the job queue, poll slots, locks) answers without it."""
    return ServiceUnavailable("the job queue (Redis) is unavailable; retry later",
                              code="queue_unavailable", headers={"Retry-After": "5"})
