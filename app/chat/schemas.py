from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.leases.schemas import MAX_BATCH, Grant, PostedResult, ResultsThenJobs
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


# --- the miner's side: a lease of a chat job, and its result -----------------------------------

class HistoryItem(ResponseBody):
    role: Literal["user", "assistant"]
    content: str


class ChatAssignment(Grant):
    kind: Literal["chat"] = "chat"
    prompt: str
    context: str | None
    session_id: str
    history: list[HistoryItem] = Field(description="earlier turns of the session, oldest first; "
                                                   "the current prompt is not included")
    attempt: int
    # what a /v1/chat/completions client asked for; null/false for POST /chat jobs
    model: str | None = Field(default=None, description="the model the client asked for (one "
                                                        "you declared), or null: any")
    stream: bool = Field(default=False, description="a client watches the answer as it is "
                                                    "generated: post chunks on the lease "
                                                    "(POST /job/{job_id}/chunk)")
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    # tool calls and structured output: pass these to your model server as they are (only jobs
    # whose needs you declared with `capabilities` on your polls come to you)
    messages: list[dict[str, Any]] | None = Field(
        default=None, description="the whole conversation in OpenAI's shape (tool calls and tool "
                                  "results included): send it as is instead of building it from "
                                  "context, history and prompt")
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = Field(
        default=None, description="json_object or json_schema: the answer is validated (against "
                                  "the schema) when you post it; one that does not match is "
                                  "refused (422 invalid_output) and the job goes to another miner")


class ChatAssignments(ResponseBody):
    jobs: list[ChatAssignment] = Field(description="1 to `max` leased chat jobs, oldest first")


class ChatResultsThenJobs(ResultsThenJobs):
    jobs: list[ChatAssignment] = Field(
        default_factory=list,
        description="0 to `next` leased chat jobs, oldest first, as GET /job/batch answers them")


FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")


class ResultIn(PostedResult):
    """A chat job's result."""
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] | None = Field(
        default=None,
        description="why your model server stopped (its `finish_reason`). When sent, it is "
                    "signed with the output: keccak256(utf8(job_id) || utf8(output) || 0x00 || "
                    "utf8(finish_reason)). Results without it are accepted (signed as before)")


class ResultsIn(RequestBody):
    results: list[ResultIn] = Field(min_length=1, max_length=MAX_BATCH)


class ResultOut(ResponseBody):
    job_id: str
    status: Literal["completed"]
    session_id: str
    output_tokens: int | None = Field(description="the output's tokens as the server counts "
                                                  "them (TOKENIZER): what you are credited")
    completed_at: datetime
