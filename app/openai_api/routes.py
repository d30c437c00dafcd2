"""POST /v1/chat/completions and GET /v1/models (the mapping: app/openai_api/__init__.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app import idempotency, observability
from app.accounts import billing
from app.auth.guards import client_guard
from app.auth.principals import Client
from app.chat import options as chat_options
from app.chat import service
from app.chat.options import Options
from app.context import AppContext, ctx
from app.db import Unit
from app.errors import AppError, BadRequest, NotFound
from app.hangup import unless_hung_up
from app.leases import served
from app.models import ChatJob
from app.openai_api import convert, relay, structured
from app.openai_api.schemas import Completion, CompletionIn, ErrorOut, ModelList, ModelOut
from app.tokens import count as count_tokens
from app.web import Router, json_response

router = Router("openai")
V1 = dict(auth=("ApiKey",), optional_auth=True, error_body=ErrorOut)
SSE = {200: {"text/event-stream": {"schema": {
    "type": "string", "description": "with `stream: true`: `data: <chat.completion.chunk>` "
                                     "events, then `data: [DONE]`"}}}}


class Failed(AppError):
    status, code = 502, "job_failed"


class TimedOut(AppError):
    status, code = 504, "timeout"


@router.post("/v1/chat/completions", body=CompletionIn, responses={200: Completion}, content=SSE,
             errors=(401, 402, 403, 404, 409, 502, 504),
             guard=client_guard("chat", submits=True),
             headers=(idempotency.PARAMETER,), **V1)
async def create_completion(request: Request, who: Client, body: CompletionIn) -> Response:
    """OpenAI's chat completions, answered by the network's miners. `stream: true` sends the
    answer as it is generated (Server-Sent Events). `model` must be one GET /v1/models lists.
    Extension: `session_id` continues a chat session (its stored turns must begin `messages`);
    the answer names the `session_id` and `job_id` it used."""
    c = ctx(request)
    talk = convert.conversation(body)
    asked = convert.options(body, talk)
    s = c.settings
    convert.check_limits(talk, s.chat_history_limit, s.openai_max_input_chars)
    if not await served.is_served(c.redis, s.redis_prefix, s.model_ttl_s, body.model):
        raise _no_model(body.model)
    needs = structured.needs(body, talk.messages is not None)
    missing = await served.missing(c.redis, s.redis_prefix, s.model_ttl_s, body.model,
                                   [n for n, _ in needs])
    if missing:
        param = next(p for n, p in needs if n == missing[0])
        raise BadRequest(f"no miner serving `{body.model}` offers {structured.NAMES[missing[0]]} "
                         "now, so this request cannot be honoured; nothing was queued",
                         code="unsupported_parameter", extra={"param": param})
    route = structured.route(body.model, [n for n, _ in needs])
    if len(route) > 128:
        raise BadRequest("the model name is too long for tool calls or structured output",
                         code="invalid_value", extra={"param": "model"})
    job, headers = await _submit(request, c, who, body, talk, asked, route)
    created = int(time.time())
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        events = _stream(c, who, job, body.model, created, talk if usage else None, asked)
        return StreamingResponse(events, media_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
    # A client that hangs up ends the wait (and frees its server slot); the job goes on.
    job = await unless_hung_up(request, service.wait_for(c, who, job, s.openai_max_wait_s,
                                                         fresh=True))
    if job.status == "failed":
        raise Failed(f"the network could not answer: {job.failure_reason}")
    if job.status != "completed":
        raise TimedOut(f"no answer within {s.openai_max_wait_s} s (OPENAI_MAX_WAIT_S); the job "
                       f"goes on: GET /chat/{job.id}", extra={"job_id": job.id})
    return json_response(convert.completion(job, body.model, created,
                                            await _prompt_tokens(c, talk), asked),
                         headers=headers or None)


async def _submit(request: Request, c: AppContext, who: Client, body: CompletionIn,
                  talk: convert.Conversation, asked: Options,
                  route: str) -> tuple[ChatJob, dict[str, str]]:
    """The request's job (on `route`'s queue list), and the headers its answer carries: with an
    Idempotency-Key a retry gets the first request's job (app/idempotency.py)."""
    async def create(u: Unit) -> ChatJob:
        job = await service.submit(u, c, who, talk.prompt, body.session_id, talk.context,
                                   model=route, options=chat_options.dump(asked),
                                   earlier=talk.earlier)
        if body.stream:  # before the job is queued (after commit): its first chunk sees a reader
            await c.relay.mark_watched(job.id)
        return job
    fast = (c.db.hot and not talk.earlier and body.session_id is None
            and not billing.chat_priced(c.settings))  # priced chat holds money: SQLAlchemy
    made = await idempotency.once(c.db, idempotency.key_of(request, who, body),
                                  c.settings.idempotency_key_ttl_s, create,
                                  unit=service.fast_unit(c) if fast else None)
    if isinstance(made, idempotency.Replay):
        return await service.get_owned(c, who, made.job_id), idempotency.REPLAYED
    return made, {}


async def _prompt_tokens(c: AppContext, talk: convert.Conversation) -> int:
    """The prompt's tokens for `usage`, every message counted by the server (TOKENIZER)."""
    if talk.messages is not None:  # tool turns: what the model saw is the whole conversation
        texts = [orjson.dumps(talk.messages).decode()]
    else:
        texts = [t for _, t in talk.earlier] + [talk.prompt] + ([talk.context] if talk.context
                                                                else [])
    return sum([await count_tokens(c.settings.tokenizer, t) for t in texts])


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _stream(c: AppContext, who: Client, job: ChatJob, model: str, created: int,
                  usage_of: convert.Conversation | None, asked: Options) -> AsyncIterator[bytes]:
    """The SSE events of one streamed answer; with `usage_of`, the usage chunk at the end (its
    prompt counted then, not before the first event)."""
    head = {"id": convert.completion_id(job.id), "object": "chat.completion.chunk",
            "created": created, "model": model,
            "job_id": job.id, "session_id": job.session_id}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _event({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    first_token = observability.first_token_timer()  # mia_stream_first_token_seconds
    # a structured answer is vetted whole when the miner posts it: nothing is relayed before
    async for event in relay.follow(c, who, job.id, c.settings.openai_max_wait_s,
                                    deltas=not asked.structured):
        if event is None:
            yield b": keep-alive\n\n"
        elif isinstance(event, relay.Delta):
            first_token()
            yield chunk({"content": event.text})
        elif isinstance(event, relay.Broken):
            yield _event({"error": {"message": event.message, "type": "server_error",
                                    "code": event.code, "param": None}})
            return
        else:
            calls = convert.tool_calls(event.job)
            if calls:
                yield chunk({"tool_calls": [{"index": i, **call.model_dump(mode="json")}
                                            for i, call in enumerate(calls)]})
            elif event.rest:
                yield chunk({"content": event.rest})
            yield chunk({}, convert.finish_reason(event.job, asked))
            if usage_of is not None:
                prompt_tokens = await _prompt_tokens(c, usage_of)
                yield _event({**head, "choices": [],
                              "usage": convert.usage(prompt_tokens, event.job, asked).model_dump()})
            yield b"data: [DONE]\n\n"
            return


@router.get("/v1/models", responses={200: ModelList}, guard=client_guard("chat"), **V1)
async def list_models(request: Request, who: Client) -> ModelList:
    """The models the network serves now: those a miner declared within MODEL_TTL_S."""
    c = ctx(request)
    found = await served.served(c.redis, c.settings.redis_prefix, c.settings.model_ttl_s)
    return ModelList(data=[ModelOut(id=m.model, created=m.since) for m in found])


@router.get("/v1/models/{model:path}", responses={200: ModelOut}, errors=(404,),
            guard=client_guard("chat"), **V1)
async def retrieve_model(request: Request, who: Client) -> ModelOut:
    """One model the network serves now (declared within MODEL_TTL_S); 404 model_not_found
    otherwise."""
    c = ctx(request)
    name = request.path_params["model"]
    found = (await served.one(c.redis, c.settings.redis_prefix, c.settings.model_ttl_s, name)
             if served.MODEL_NAME.match(name) else None)
    if found is None:
        raise _no_model(name)
    return ModelOut(id=found.model, created=found.since)


def _no_model(name: str) -> NotFound:
    return NotFound(f"The model `{name}` does not exist or no miner serves it now; GET "
                    "/v1/models lists those that are served", code="model_not_found",
                    extra={"param": "model"})
