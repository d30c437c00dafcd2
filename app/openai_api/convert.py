"""Between OpenAI's shapes and our chat jobs: a request's messages become a job (its context, the
session's earlier turns, the prompt); a finished job becomes a completion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.chat.options import Options
from app.errors import BadRequest
from app.models import ChatJob
from app.openai_api import structured
from app.openai_api.schemas import (Choice, Completion, CompletionIn, ContentPart, MessageOut,
                                    ToolCallOut, Usage)

MAX_STOP = 4  # as OpenAI


@dataclass(frozen=True)
class Conversation:
    context: str | None  # the system and developer messages, joined
    earlier: list[tuple[str, str]]  # (role, text) before the last turn: the session's history
    prompt: str  # the last user turn (or, after tool calls, the tools' results as text)
    # the whole conversation in OpenAI's shape, handed to the miner as is, when it holds tool
    # calls or tool results (our sessions keep text turns only); None for plain conversations
    messages: list[dict[str, Any]] | None = None
    turns_before_last: int = 0
    chars: int = 0


def _bad(message: str, param: str) -> BadRequest:
    return BadRequest(message, code="invalid_value", extra={"param": param})


def _text(content: str | list[ContentPart] | None, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise _bad(f"content parts of type {part.type!r} are not supported: text only",
                       f"{param}[{i}].type")
        parts.append(part.text)
    return "".join(parts)


def check_limits(talk: Conversation, history_limit: int, max_chars: int) -> None:
    """What the model would see must be what was sent: a conversation longer than the miner is
    handed (CHAT_HISTORY_LIMIT earlier turns) is refused rather than cut, and so is more text
    than OPENAI_MAX_INPUT_CHARS in all."""
    if talk.turns_before_last > history_limit:
        raise BadRequest(f"the conversation has {talk.turns_before_last} turns before the last "
                         f"message; the network's models are handed at most {history_limit} "
                         "(CHAT_HISTORY_LIMIT): send fewer, or summarise the older ones in a "
                         "system message", code="context_length_exceeded",
                         extra={"param": "messages"})
    if talk.chars > max_chars:
        raise BadRequest(f"the messages hold {talk.chars} characters; at most {max_chars} "
                         "(OPENAI_MAX_INPUT_CHARS) may be sent in one request",
                         code="context_length_exceeded", extra={"param": "messages"})


def conversation(body: CompletionIn) -> Conversation:
    structured.refuse_unsupported(body)
    system, turns, whole = [], [], []
    tooling = bool(body.tools) or any(m.role == "tool" or m.tool_calls for m in body.messages)
    chars = 0
    for i, m in enumerate(body.messages):
        param = f"messages[{i}]"
        if m.role == "function":
            raise _bad("messages with role 'function' are not supported: use tools and "
                       "role 'tool'", f"{param}.role")
        text = _text(m.content, f"{param}.content")
        chars += len(text) + sum(len(c.function.arguments) + len(c.function.name)
                                 for c in m.tool_calls or ())
        if m.role == "tool" and not m.tool_call_id:
            raise _bad("a tool message names the call it answers (tool_call_id)",
                       f"{param}.tool_call_id")
        if m.tool_calls and m.role != "assistant":
            raise _bad("only assistant messages carry tool_calls", f"{param}.tool_calls")
        whole.append(structured.message(m.role, text, m.tool_calls, m.tool_call_id))
        if m.role in ("system", "developer"):
            if text.strip():
                system.append(text)
        else:
            turns.append((m.role, text))
    if not turns or turns[-1][0] not in ("user", "tool"):
        raise _bad("the last message must be the user's turn (or tool results) to answer",
                   "messages")
    last = len(body.messages) - 1
    if turns[-1][0] == "tool":
        # the tools' results since the last assistant turn are this job's prompt, as text
        tail = []
        for role, text in reversed(turns):
            if role != "tool":
                break
            tail.append(text)
        prompt = "[tool results] " + ("\n".join(reversed(tail)) or "(empty)")
    else:
        prompt = turns[-1][1]
        if not prompt.strip():
            raise _bad("the last user message is empty", f"messages[{last}].content")
    if tooling and body.session_id is not None:
        raise _bad("session_id cannot continue a conversation with tool calls: send the whole "
                   "conversation", "session_id")
    earlier = [(r, t) for r, t in turns[:-1] if r in ("user", "assistant") and t] if tooling \
        else turns[:-1]
    return Conversation(context="\n\n".join(system) or None, earlier=earlier, prompt=prompt,
                        messages=whole if tooling else None,
                        turns_before_last=len(turns) - 1, chars=chars)


def options(body: CompletionIn, talk: Conversation | None = None) -> Options:
    if body.n not in (None, 1):
        raise _bad("only n=1 is supported: one answer per request", "n")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop is not None and (len(stop) > MAX_STOP or any(not s for s in stop)):
        raise _bad(f"stop takes up to {MAX_STOP} non-empty sequences", "stop")
    return Options(max_tokens=body.max_completion_tokens or body.max_tokens,
                   temperature=body.temperature, top_p=body.top_p, stop=stop or None,
                   stream=body.stream, messages=talk.messages if talk else None,
                   **structured.options(body))


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def finish_reason(job: ChatJob, asked: Options) -> str:
    """"length" when the answer was cut by the effective limit: the miner's model server said
    so (the miner's own cap, or the client's max_tokens, whichever is smaller), or the answer
    used the client's whole max_tokens by the server's count. Else the model server's reason
    ("stop" when the miner did not say: miners before finish reasons)."""
    tokens = job.output_tokens or 0
    if job.finish_reason == "tool_calls":
        return "tool_calls"
    if job.finish_reason == "length" or (asked.max_tokens is not None
                                         and tokens >= asked.max_tokens):
        return "length"
    return job.finish_reason if job.finish_reason in ("stop", "content_filter") else "stop"


def completion_tokens(job: ChatJob, asked: Options) -> int:
    """The answer's tokens as credited: the server's count, never above max_tokens."""
    tokens = job.output_tokens or 0
    return tokens if asked.max_tokens is None else min(tokens, asked.max_tokens)


def usage(prompt_tokens: int, job: ChatJob, asked: Options) -> Usage:
    completion = completion_tokens(job, asked)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                 total_tokens=prompt_tokens + completion)


def tool_calls(job: ChatJob) -> list[ToolCallOut] | None:
    """The tool calls of an answer that ended in them (vetted when the miner posted them)."""
    if job.finish_reason != "tool_calls":
        return None
    return [ToolCallOut.model_validate(c) for c in structured.tool_calls(job.response or "[]")]


def completion(job: ChatJob, model: str, created: int, prompt_tokens: int,
               asked: Options) -> dict[str, Any]:
    calls = tool_calls(job)
    message = MessageOut(content=None if calls else job.response or "", tool_calls=calls)
    out = Completion(id=completion_id(job.id), created=created, model=model,
                     choices=[Choice(message=message,
                                     finish_reason=finish_reason(job, asked))],  # type: ignore[arg-type]
                     usage=usage(prompt_tokens, job, asked), job_id=job.id,
                     session_id=job.session_id).model_dump(mode="json")
    if calls is None:  # OpenAI's answers leave it out rather than null
        del out["choices"][0]["message"]["tool_calls"]
    return out
