"""/v1 bodies in OpenAI's shapes. Requests ignore fields we do not know, as OpenAI does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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


MAX_TOOLS = 128  # as OpenAI
FUNCTION_NAME = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")


class FunctionCallIn(RequestBody):
    name: str = FUNCTION_NAME
    arguments: str = Field(max_length=MAX_CONTENT)


class ToolCallIn(RequestBody):
    """A tool call of an earlier assistant turn, as the client sends it back."""
    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: (Annotated[str, Field(max_length=MAX_CONTENT)]
              | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)] | None) = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=128)


class FunctionDef(RequestBody):
    name: str = FUNCTION_NAME
    description: str | None = Field(default=None, max_length=8_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(RequestBody):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(RequestBody):
    name: str = FUNCTION_NAME


class NamedTool(RequestBody):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(RequestBody):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = Field(default=None, max_length=8_000)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(RequestBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


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
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # refused with a 400 naming them (never accepted and ignored): convert.refuse_unsupported
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    # our extension: continue this chat session (extra_body={"session_id": ...} in the SDKs)
    session_id: str | None = SESSION_ID


class Usage(ResponseBody):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCallOut(ResponseBody):
    name: str
    arguments: str = Field(description="the arguments, a JSON object as text")


class ToolCallOut(ResponseBody):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class MessageOut(ResponseBody):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = Field(
        default=None, description="present when finish_reason is tool_calls")


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
