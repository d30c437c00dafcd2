"""Between OpenAI's shapes and our chat jobs: a request's messages become a job (its context, the
session's earlier turns, the prompt); a finished job becomes a completion."""

from __future__ import annotations

from dataclasses import dataclass

from app.chat.options import Options
from app.errors import BadRequest
from app.models import ChatJob
from app.openai_api.schemas import (Choice, Completion, CompletionIn, ContentPart, MessageOut,
                                    Usage)

MAX_STOP = 4  # as OpenAI


@dataclass(frozen=True)
class Conversation:
    context: str | None  # the system and developer messages, joined
    earlier: list[tuple[str, str]]  # (role, text) before the last user turn
    prompt: str  # the last user turn


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
    if len(talk.earlier) > history_limit:
        raise BadRequest(f"the conversation has {len(talk.earlier)} turns before the last user "
                         f"message; the network's models are handed at most {history_limit} "
                         "(CHAT_HISTORY_LIMIT): send fewer, or summarise the older ones in a "
                         "system message", code="context_length_exceeded",
                         extra={"param": "messages"})
    chars = (len(talk.context or "") + sum(len(t) for _, t in talk.earlier) + len(talk.prompt))
    if chars > max_chars:
        raise BadRequest(f"the messages hold {chars} characters; at most {max_chars} "
                         "(OPENAI_MAX_INPUT_CHARS) may be sent in one request",
                         code="context_length_exceeded", extra={"param": "messages"})


def conversation(body: CompletionIn) -> Conversation:
    system, turns = [], []
    for i, m in enumerate(body.messages):
        param = f"messages[{i}]"
        if m.role in ("tool", "function"):
            raise _bad(f"messages with role {m.role!r} are not supported: the network's models "
                       "answer text conversations (no tools)", f"{param}.role")
        text = _text(m.content, f"{param}.content")
        if m.role in ("system", "developer"):
            if text.strip():
                system.append(text)
        else:
            turns.append((m.role, text))
    if not turns or turns[-1][0] != "user":
        raise _bad("the last message must be the user's turn to answer", "messages")
    prompt = turns[-1][1]
    if not prompt.strip():
        raise _bad("the last user message is empty", f"messages[{len(body.messages) - 1}].content")
    return Conversation(context="\n\n".join(system) or None, earlier=turns[:-1], prompt=prompt)


def options(body: CompletionIn) -> Options:
    if body.n not in (None, 1):
        raise _bad("only n=1 is supported: one answer per request", "n")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop is not None and (len(stop) > MAX_STOP or any(not s for s in stop)):
        raise _bad(f"stop takes up to {MAX_STOP} non-empty sequences", "stop")
    return Options(max_tokens=body.max_completion_tokens or body.max_tokens,
                   temperature=body.temperature, top_p=body.top_p, stop=stop or None,
                   stream=body.stream)


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def finish_reason(job: ChatJob, asked: Options) -> str:
    """"length" when the answer was cut by the effective limit: the miner's model server said
    so (the miner's own cap, or the client's max_tokens, whichever is smaller), or the answer
    used the client's whole max_tokens by the server's count. Else the model server's reason
    ("stop" when the miner did not say: miners before finish reasons)."""
    tokens = job.output_tokens or 0
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


def completion(job: ChatJob, model: str, created: int, prompt_tokens: int,
               asked: Options) -> Completion:
    return Completion(id=completion_id(job.id), created=created, model=model,
                      choices=[Choice(message=MessageOut(content=job.response or ""),
                                      finish_reason=finish_reason(job, asked))],  # type: ignore[arg-type]
                      usage=usage(prompt_tokens, job, asked), job_id=job.id, session_id=job.session_id)
