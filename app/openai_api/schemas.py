"""/v1 bodies in OpenAI's shapes. Requests ignore fields we do not know, as OpenAI does."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from app.chat.schemas import SESSION_ID
from app.leases.served import MODEL_NAME
from app.schemas import RequestBody, ResponseBody

MAX_MESSAGES = 512
MAX_CONTENT = 32_000  # characters of one message (OPENAI_MAX_INPUT_CHARS bounds them all)
MAX_PARTS = 64  # content parts of one message


class ContentPart(RequestBody):
    type: str
    text: str | None = Field(default=None, max_length=MAX_CONTENT)


class MessageIn(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: (Annotated[str, Field(max_length=MAX_CONTENT)]
              | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)] | None) = None
    name: str | None = Field(default=None, max_length=256)


class StreamOptions(RequestBody):
    include_usage: bool = False


class CompletionIn(RequestBody):
    model: str = Field(min_length=1, max_length=128, pattern=MODEL_NAME.pattern)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = Field(default=None)
    user: str | None = Field(default=None, max_length=256)
    n: int | None = None
    # our extension: continue this chat session (extra_body={"session_id": ...} in the SDKs)
    session_id: str | None = SESSION_ID


class Usage(ResponseBody):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MessageOut(ResponseBody):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(ResponseBody):
    index: int = 0
    message: MessageOut
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]
    logprobs: None = None


class Completion(ResponseBody):
    id: str = Field(description="chatcmpl-<job id>")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    # ours, beside OpenAI's fields: where the job and its conversation live
    job_id: str
    session_id: str


class ModelOut(ResponseBody):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when a miner first declared it (unix seconds)")
    owned_by: str = "mia-network"


class ModelList(ResponseBody):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class ErrorDetail(ResponseBody):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, "
                                  "permission_error, rate_limit_error or server_error")
    code: str | None
    param: str | None


class ErrorOut(ResponseBody):
    """Errors on /v1, in OpenAI's shape."""
    error: ErrorDetail
