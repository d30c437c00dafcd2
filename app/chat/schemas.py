from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.schemas import RequestBody, ResponseBody

SESSION_ID = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
Status = Literal["queued", "assigned", "completed", "failed"]


class ChatIn(RequestBody):
    message: str = Field(min_length=1, max_length=8000)
    session_id: str | None = SESSION_ID
    context: str | None = Field(default=None, max_length=16000)
    # Seed clients sent business_id in the body; the business now comes from the API key only.


class ChatJobOut(ResponseBody):
    job_id: str
    session_id: str
    status: Status
    response: str | None = None
    completed_at: datetime | None = None
    failure_reason: str | None = None


class ChatMessageOut(ResponseBody):
    role: Literal["user", "assistant"]
    message: str
    timestamp: datetime
    job_id: str | None


class SessionMessagesOut(ResponseBody):
    session_id: str
    messages: list[ChatMessageOut]
