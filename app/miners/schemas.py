from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.auth.schemas import MAX_MESSAGE, SIGNATURE
from app.schemas import QueryParams, RequestBody, ResponseBody


class RegisterIn(RequestBody):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE)
    signature: str = SIGNATURE
    name: str | None = Field(default=None, min_length=1, max_length=100)


class RegisterOut(ResponseBody):
    miner_id: int
    address: str
    token: str
    expires_at: datetime


class NextQuery(QueryParams):
    wait: float = Field(default=0, ge=0, le=30, description="seconds to long-poll for a job")


class HistoryItem(ResponseBody):
    role: Literal["user", "assistant"]
    content: str


class ChatAssignment(ResponseBody):
    job_id: str
    lease_id: str
    lease_expires_at: datetime
    kind: Literal["chat"] = "chat"
    prompt: str
    context: str | None
    session_id: str
    history: list[HistoryItem] = Field(description="earlier turns of the session, oldest first; "
                                                   "the current prompt is not included")
    attempt: int


class ResultIn(RequestBody):
    job_id: str = Field(min_length=1, max_length=64)
    lease_id: str = Field(min_length=1, max_length=64)
    output: str = Field(min_length=1, max_length=100_000)
    output_tokens: int | None = Field(default=None, ge=0, le=1_000_000)
    signature: str = SIGNATURE


class ResultOut(ResponseBody):
    job_id: str
    status: Literal["completed"]
    session_id: str
    output_tokens: int | None
    completed_at: datetime


class LeaseIn(RequestBody):
    lease_id: str = Field(min_length=1, max_length=64)
    seconds: int | None = Field(default=None, ge=1, le=3600,
                                description="new lease length from now; default LEASE_SECONDS")


class LeaseOut(ResponseBody):
    job_id: str
    lease_id: str
    lease_expires_at: datetime


class ReleaseIn(RequestBody):
    lease_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="released by miner", max_length=500)


class ReleaseOut(ResponseBody):
    job_id: str
    status: Literal["queued", "failed"]
