"""What a /v1/chat/completions client asked of the model, kept with the job (chat_jobs.options,
JSON) and handed to the miner with the lease. POST /chat jobs have none: the miner's defaults."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import Field

from app.chat.schemas import ChatAssignment, HistoryItem
from app.schemas import ResponseBody


class Options(ResponseBody):
    max_tokens: int | None = Field(default=None, description="the most tokens to generate")
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = Field(default=None, description="stop sequences")
    stream: bool = Field(default=False, description="a client is watching the answer as it is "
                                                    "generated: post chunks (POST /job/{id}/chunk)")


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
    return ChatAssignment(job_id=job_id, lease_id=lease_id, lease_expires_at=expires_at,
                          prompt=prompt, context=context, session_id=session_id, history=history,
                          attempt=attempt, model=model, **asked.model_dump())
