from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from app.leases.schemas import MAX_BATCH, Grant, PostedResult, ResultsThenJobs
from app.schemas import RequestBody, ResponseBody

Status = Literal["queued", "assigned", "processing", "completed", "failed"]


class IdleJobIn(RequestBody):
    prompt: str = Field(min_length=1, max_length=32_000)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    # The seed took the API key and a usd_earned in the body; both are ignored now.


class IdleJobCreated(ResponseBody):
    job_id: str
    status: Status
    estimated_cost_usd: Decimal = Field(description="upper bound: max_tokens at the current price")


class IdleJobOut(ResponseBody):
    job_id: str
    status: Status
    max_tokens: int
    result: str | None = None
    output_tokens: int | None = None
    usd_earned: Decimal | None = Field(default=None, description="what this job cost the client")
    processed_by: Literal["miner", "runpod"] | None = None
    created_at: datetime
    completed_at: datetime | None = None
    failure_reason: str | None = None


class IdleAssignment(Grant):
    kind: Literal["idle"] = "idle"
    prompt: str
    max_tokens: int
    attempt: int


class IdleAssignments(ResponseBody):
    jobs: list[IdleAssignment] = Field(description="1 to `max` leased idle jobs, oldest first")


class IdleResultsThenJobs(ResultsThenJobs):
    jobs: list[IdleAssignment] = Field(
        default_factory=list,
        description="0 to `next` leased idle jobs, oldest first, as GET /idle-job/batch "
                    "answers them")


class IdleResultIn(PostedResult):
    """An idle job's result: billed on the server's count, up to the job's max_tokens."""
    # usd_earned, sent by seed miners, is ignored: revenue is computed by the server.


class IdleResultsIn(RequestBody):
    results: list[IdleResultIn] = Field(min_length=1, max_length=MAX_BATCH)


class IdleResultOut(ResponseBody):
    job_id: str
    status: Literal["completed"]
    output_tokens: int = Field(description="the output's tokens as the server counts them "
                                           "(TOKENIZER), up to max_tokens: what is billed")
    usd_earned: Decimal
    completed_at: datetime


class ProcessOut(ResponseBody):
    job_id: str
    status: Literal["processing"]
    detail: str

