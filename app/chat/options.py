"""What a /v1/chat/completions client asked of the model, kept with the job (chat_jobs.options,
JSON) and handed to the miner with the lease. POST /chat jobs have none: the miner's defaults."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import Field

from app.chat.schemas import ChatAssignment, HistoryItem
from app.leases.served import ROUTE_SEP
from app.schemas import ResponseBody


class Options(ResponseBody):
    max_tokens: int | None = Field(default=None, description="the most tokens to generate")
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = Field(default=None, description="stop sequences")
    stream: bool = Field(default=False, description="a client is watching the answer as it is "
                                                    "generated: post chunks (POST /job/{id}/chunk)")
    # tool calls and structured output (app/openai_api/structured.py), in OpenAI's shapes
    messages: list[dict[str, Any]] | None = Field(
        default=None, description="the whole conversation in OpenAI's shape (with tool calls and "
                                  "tool results): send it to the model server as is, instead of "
                                  "context + history + prompt")
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    @property
    def structured(self) -> bool:
        """The answer is vetted before anyone sees it: never relayed as it is generated."""
        return bool(self.tools or self.response_format or self.messages)


NONE = Options()


def dump(options: Options | None) -> str | None:
    if options is None or options == NONE:
        return None
    return orjson.dumps(options.model_dump(exclude_defaults=True)).decode()


def load(raw: str | None) -> Options:
    if not raw:
        return NONE
    data: dict[str, Any] = orjson.loads(raw)
    return Options.model_validate(data)


def tool_calls(text: str) -> list[dict[str, Any]]:
    """The tool calls of an answer that ended in them: the output is their JSON array, each
    {"id", "type": "function", "function": {"name", "arguments"}}. ValueError if it is not."""
    calls = orjson.loads(text)
    if not isinstance(calls, list) or not calls:
        raise ValueError("tool calls come as a non-empty JSON array")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError(f"tool call {i} has no function name")
        args = fn.get("arguments")
        if not isinstance(args, str) or not isinstance(orjson.loads(args or "{}"), dict):
            raise ValueError(f"tool call {i}: arguments must be a JSON object, as text")
        call_id = call.get("id")
        out.append({"id": call_id if isinstance(call_id, str) and call_id else f"call_{i}",
                    "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def vet(raw: str | None, output: str, finish_reason: str | None) -> str | None:
    """Why a miner's answer does not do what the client asked (tool calls of the offered tools,
    JSON, JSON matching the schema), or None when it does or nothing was asked."""
    asked = load(raw)
    if not (asked.tools or asked.response_format):
        return None
    if finish_reason == "tool_calls":
        if not asked.tools or asked.tool_choice == "none":
            return "tool calls, but the client offered no tools"
        try:
            calls = tool_calls(output)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return f"malformed tool calls: {exc}"
        offered = {t["function"]["name"]: t["function"] for t in asked.tools}
        for call in calls:
            fn = offered.get(call["function"]["name"])
            if fn is None:
                return f"a call of `{call['function']['name']}`, which is not an offered tool"
            problem = _schema_problem(fn.get("parameters"),
                                      orjson.loads(call["function"]["arguments"] or "{}"))
            if problem:
                return f"the arguments of `{fn['name']}` do not match its parameters: {problem}"
        if asked.parallel_tool_calls is False and len(calls) > 1:
            return "several tool calls, but the client asked for one at a time"
        return None
    if asked.tool_choice == "required" or isinstance(asked.tool_choice, dict):
        return "the client required a tool call"
    fmt = asked.response_format
    if fmt is None or finish_reason == "length":
        return None  # a cut answer is reported as such ("length"), not vetted
    try:
        value = orjson.loads(output)
    except orjson.JSONDecodeError:
        return "the answer is not JSON"
    if fmt.get("type") == "json_object":
        return None if isinstance(value, dict) else "the answer is not a JSON object"
    return _schema_problem((fmt.get("json_schema") or {}).get("schema"), value)


def _schema_problem(schema: dict[str, Any] | None, value: Any) -> str | None:
    if not schema:
        return None
    from jsonschema import Draft202012Validator  # only structured answers pay for the import
    error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
    return None if error is None else error.message[:300]


def capped(tokens: int, raw: str | None) -> int:
    """The output's tokens as credited and reported: never more than the job's max_tokens (the
    server's tokenizer may count more than the miner's model generated)."""
    asked = load(raw).max_tokens
    return tokens if asked is None else min(tokens, asked)


def assignment(*, job_id: str, lease_id: str, expires_at: datetime, prompt: str,
               context: str | None, session_id: str, history: list[HistoryItem], attempt: int,
               model: str | None, raw_options: str | None) -> ChatAssignment:
    """One lease's assignment, on either database: the job, its history, what the client asked."""
    asked = load(raw_options)
    fields = asked.model_dump()
    # a structured answer is vetted whole before anyone sees it: the miner need not stream it
    fields["stream"] = asked.stream and not asked.structured
    return ChatAssignment(job_id=job_id, lease_id=lease_id, lease_expires_at=expires_at,
                          prompt=prompt, context=context, session_id=session_id, history=history,
                          attempt=attempt, model=model.split(ROUTE_SEP)[0] if model else model,
                          **fields)
