"""What every job kind's miner endpoints take and answer, beside each kind's own shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.auth.schemas import SIGNATURE
from app.schemas import QueryParams, RequestBody, ResponseBody

MAX_BATCH = 64  # jobs per GET .../batch and results per POST .../results


class NextQuery(QueryParams):
    wait: float = Field(default=0, ge=0, le=30, description=(
        "seconds to long-poll for a job (5 or more may end up to a fifth early)"))
    model: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._:/@+\-]{1,128}$",
        description="the model you serve, as your model server names it: declares it (GET "
                    "/v1/models lists it) and, for chat, also hands you jobs a /v1 client asked "
                    "for that model; without it you get only jobs that name no model")
    capabilities: str | None = Field(
        default=None, max_length=200, pattern=r"^[a-z_,]*$",
        description="with `model`: what your model server can do beyond plain chat, comma-"
                    "separated: `tools` (tool calls), `json_object`, `json_schema` (structured "
                    "output). /v1 jobs that need them come only to miners declaring them")


class BatchQuery(NextQuery):
    max: int = Field(default=1, ge=1, le=MAX_BATCH,
                     description="the most jobs to lease; the answer comes as soon as one is there")


class Grant(ResponseBody):
    """What every kind's assignment starts with: the job and the lease it is held under."""
    job_id: str
    lease_id: str
    lease_expires_at: datetime


class PostedResult(RequestBody):
    """A miner's result for a leased job, as every kind takes it, each signed on its own."""
    job_id: str = Field(min_length=1, max_length=64)
    lease_id: str = Field(min_length=1, max_length=64)
    output: str = Field(min_length=1, max_length=100_000)
    output_tokens: int | None = Field(
        default=None, ge=0, le=1_000_000,
        description="your count of the tokens generated: stored for comparison, never billed "
                    "or credited. The server counts the output's tokens itself (TOKENIZER)")
    signature: str = SIGNATURE


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


class ChunkIn(RequestBody):
    lease_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0, le=1_000_000, description="0 for the lease's first chunk, then "
                                                     "consecutive; a number already taken is "
                                                     "ignored (so a retry is safe)")
    delta: str = Field(min_length=1, max_length=16_000, description="new output text")


class ChunkOut(ResponseBody):
    job_id: str
    next_seq: int = Field(description="the number the lease's next chunk must carry")
    watching: bool = Field(description="a client is reading the stream now; when false you "
                                       "may stop posting chunks (the final result still counts)")


class ItemResult(ResponseBody):
    job_id: str
    status: Literal["completed", "rejected"]
    error: str | None = Field(default=None, description="why it was rejected: the code the "
                                                        "single-result endpoint would answer")
    detail: str | None = None


class ResultsOut(ResponseBody):
    results: list[ItemResult] = Field(description="one entry per item posted, in order")


class ResultsQuery(NextQuery):
    """POST .../results: with `next`, the same request then leases the miner's next jobs."""
    next: int = Field(default=0, ge=0, le=MAX_BATCH, description=(
        "after storing the results, lease up to this many jobs as GET .../batch?max=next would "
        "(long-polling `wait` seconds for the first): one request where a miner spent two. "
        "0: results only"))


class LeaseRefused(ResponseBody):
    """Why the lease part of a POST .../results?next= leased nothing: the error GET .../batch
    would have answered. The results were stored all the same."""
    status: int = Field(description="the HTTP status GET .../batch would have answered")
    error: str
    detail: str
    retry_after_s: int | None = Field(default=None, description="its Retry-After, if any")


class ResultsThenJobs(ResultsOut):
    """What POST .../results?next= answers (each kind names its assignments' shape)."""
    lease_error: LeaseRefused | None = Field(
        default=None, description="set when the lease part was refused; `jobs` is then empty")


class ReturnOut(ResponseBody):
    miner_id: int
    returned_at: datetime
    how: Literal["released", "lapsed"] = Field(description="given back, or its lease ran out")
    reason: str | None = Field(default=None, description="the miner's own words when it gave "
                                                         "the job back: for operators only")


class ReturnsOut(ResponseBody):
    job_id: str
    returns: list[ReturnOut] = Field(description="every delivery that ended without a result, "
                                                 "oldest first")
