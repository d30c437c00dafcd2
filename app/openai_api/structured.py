"""Tool calls and structured output on /v1: what a request needs of the miners (capabilities),
how it travels with the job (app/chat/options.py), and what is refused outright.

A request with `tools` (or tool turns) needs miners declaring `tools`; one with `response_format`
json_object or json_schema needs `json_object` or `json_schema`. Such a job goes on a list of its
own, `<model>#<needs>` (app/queue.py keeps one per name), which only miners declaring the model
with those capabilities read (app/leases/served.py routes). A request whose needs no online miner
declares is a 400 naming the parameter, before any job exists.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from app.chat.options import tool_calls  # noqa: F401  (re-exported for convert)
from app.errors import BadRequest
from app.leases.served import LETTERS, ROUTE_SEP
from app.openai_api.schemas import CompletionIn, ToolCallIn

NAMES = {"tools": "tool calling (tools)", "json_object": "JSON output (response_format "
         "json_object)", "json_schema": "structured output (response_format json_schema)"}


def _bad(message: str, param: str, code: str = "unsupported_parameter") -> BadRequest:
    return BadRequest(message, code=code, extra={"param": param})


def refuse_unsupported(body: CompletionIn) -> None:
    """What the network cannot honour is a 400 naming it, never accepted and ignored."""
    if body.functions is not None or body.function_call is not None:
        raise _bad("`functions` and `function_call` are not supported: use `tools` and "
                   "`tool_choice`", "functions" if body.functions is not None else "function_call")
    if body.logprobs or body.top_logprobs:
        raise _bad("logprobs are not supported", "logprobs" if body.logprobs else "top_logprobs")
    if body.audio is not None or (body.modalities and body.modalities != ["text"]):
        raise _bad("audio is not supported: text only",
                   "audio" if body.audio is not None else "modalities")
    if body.prediction is not None:
        raise _bad("predicted outputs are not supported", "prediction")
    names = {t.function.name for t in body.tools or ()}
    choice = body.tool_choice
    if choice is not None and not isinstance(choice, str):
        if choice.function.name not in names:
            raise _bad(f"tool_choice names `{choice.function.name}`, which is not one of "
                       "`tools`", "tool_choice", "invalid_value")
    elif choice in ("required",) and not names:
        raise _bad("tool_choice `required` needs `tools`", "tool_choice", "invalid_value")
    for i, tool in enumerate(body.tools or ()):
        _check_schema(tool.function.parameters, f"tools[{i}].function.parameters")
    fmt = body.response_format
    if fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise _bad("response_format json_schema needs json_schema.schema",
                       "response_format.json_schema", "invalid_value")
        _check_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")


def _check_schema(schema: dict[str, Any] | None, param: str) -> None:
    if schema is None:
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise _bad(f"not a valid JSON schema: {exc.message}", param, "invalid_value") from None


def message(role: str, text: str, calls: list[ToolCallIn] | None,
            call_id: str | None) -> dict[str, Any]:
    """One message as the miner's model server is sent it (OpenAI's shape)."""
    out: dict[str, Any] = {"role": "system" if role == "developer" else role,
                           "content": text if text or not calls else None}
    if calls:
        out["tool_calls"] = [c.model_dump(mode="json") for c in calls]
    if call_id is not None:
        out["tool_call_id"] = call_id
    return out


def options(body: CompletionIn) -> dict[str, Any]:
    """The fields of app/chat/options.Options these requests add."""
    out: dict[str, Any] = {}
    if body.tools:
        out["tools"] = [t.model_dump(mode="json", exclude_none=True) for t in body.tools]
        if body.tool_choice is not None:
            out["tool_choice"] = (body.tool_choice if isinstance(body.tool_choice, str)
                                  else body.tool_choice.model_dump(mode="json"))
        if body.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = body.parallel_tool_calls
    fmt = body.response_format
    if fmt is not None and fmt.type != "text":
        out["response_format"] = fmt.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


def needs(body: CompletionIn, tooling: bool) -> list[tuple[str, str]]:
    """(capability, the request's parameter that needs it), for the capabilities this request
    needs of its miner."""
    out = []
    if tooling and body.tool_choice != "none":
        out.append(("tools", "tools"))
    elif tooling:
        out.append(("tools", "tool_choice"))
    fmt = body.response_format
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        out.append((fmt.type, "response_format"))
    return out


def route(model: str, capabilities: list[str]) -> str:
    """The queue list of a job for `model` that needs these capabilities."""
    if not capabilities:
        return model
    return model + ROUTE_SEP + "".join(sorted(LETTERS[c] for c in capabilities))
