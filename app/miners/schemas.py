from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.auth.schemas import MAX_MESSAGE, SIGNATURE
from app.schemas import RequestBody, ResponseBody


class RegisterIn(RequestBody):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE)
    signature: str = SIGNATURE
    name: str | None = Field(default=None, min_length=1, max_length=100)


class RegisterOut(ResponseBody):
    miner_id: int
    address: str
    token: str
    expires_at: datetime


class SuspensionOut(ResponseBody):
    miner_id: int
    address: str
    suspended: bool
    leases_returned: int = Field(description="leases put back in the queue by this call")
