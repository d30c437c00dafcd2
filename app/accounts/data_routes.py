"""A business's own data: erase a session, export every conversation, see the erasures; an
operator's removal of a business. What erasing touches: app/accounts/erasure.py."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

import orjson
from pydantic import Field
from sqlalchemy import and_, or_, select
from starlette.requests import Request
from starlette.responses import StreamingResponse

from app.accounts import erasure
from app.auth.guards import client_guard, wallet_guard
from app.auth.principals import Client, Wallet
from app.context import AppContext, ctx
from app.errors import NotFound, Unauthorized
from app.models import ChatJob, ChatLog, Erasure
from app.schemas import QueryParams, ResponseBody
from app.web import Router

log = logging.getLogger(__name__)
router = Router("accounts")
BUSINESS = dict(auth=("ApiKey",), guard=client_guard("chat"))
OPERATOR = dict(auth=("MinerToken",), guard=wallet_guard("operator"))
SESSION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")  # app/chat/schemas.py SESSION_ID
EXPORT_PAGE = 500  # messages per read: an export never holds more in memory
NDJSON = {200: {"application/x-ndjson": {"schema": {
    "type": "string", "description": "JSON Lines, one message a line, by session then in "
                                     "order: {session_id, job_id, role, message, context, "
                                     "timestamp}"}}}}


class ErasureOut(ResponseBody):
    id: int
    scope: Literal["session", "retention", "business"]
    subject_hash: str | None = Field(description="SHA-256 (hex) of the erased session's id")
    actor: str = Field(description='"key:<prefix>", an operator\'s address, or "worker"')
    jobs: int = Field(description="jobs whose content was erased")
    messages: int = Field(description="messages deleted")
    cancelled: int = Field(description="jobs still in flight, cancelled")
    before: datetime | None = Field(description="retention: content older than this")
    created_at: datetime


class ErasureList(ResponseBody):
    erasures: list[ErasureOut]


class ErasuresQuery(QueryParams):
    limit: int = Field(default=100, ge=1, le=500)
    before_id: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                  description="the next page: erasures older than this id")


class SessionErased(ResponseBody):
    session_id: str
    erasure_id: int
    jobs: int
    messages: int
    cancelled: int
    erased_at: datetime


class BusinessRemoved(ResponseBody):
    business_id: int
    removed_at: datetime
    keys_revoked: int = Field(description="keys this call revoked (0 when called again)")
    erasure: ErasureOut


def _out(e: Erasure) -> ErasureOut:
    return ErasureOut(id=e.id, scope=e.scope, subject_hash=e.subject_hash,  # type: ignore[arg-type]
                      actor=e.actor, jobs=e.jobs, messages=e.messages, cancelled=e.cancelled,
                      before=e.before, created_at=e.created_at)


def _business(who: Client) -> int:
    if who.anonymous or who.business_id is None:
        raise Unauthorized("an API key is required: Authorization: Bearer <key>",
                           code="missing_api_key")
    return who.business_id


@router.delete("/chat/sessions/{session_id}", responses={200: SessionErased},
               errors=(403, 404), **BUSINESS)
async def erase_session(request: Request, who: Client) -> SessionErased:
    """Erase one of your chat sessions: every message, prompt, answer and context of it, in
    the database and in Redis. Jobs of it still queued or being answered are cancelled (their
    holds released); what billing needs stays (amounts, token counts, times, ids). The erasure
    is recorded (GET /account/erasures), never its content. 404 for a session you do not have."""
    business_id = _business(who)
    session_id = request.path_params["session_id"]
    if not SESSION_ID.match(session_id):
        raise NotFound("no such chat session", code="session_not_found")
    c = ctx(request)
    async with c.db.transaction() as session:
        actor = await erasure.actor_of_key(session, who.api_key_id)
        done = await erasure.erase_session(session, c, business_id, session_id, actor)
    # ids and counts only: never the session's name or its content
    log.info("erasure %d: a session of business %d by %s (%d jobs, %d messages, %d cancelled)",
             done.erasure_id, business_id, actor, done.jobs, done.messages, done.cancelled)
    return SessionErased(session_id=session_id, erasure_id=done.erasure_id, jobs=done.jobs,
                         messages=done.messages, cancelled=done.cancelled, erased_at=done.at)


@router.get("/account/erasures", query=ErasuresQuery, responses={200: ErasureList},
            errors=(403,), **BUSINESS)
async def account_erasures(request: Request, who: Client, query: ErasuresQuery) -> ErasureList:
    """Your erasures, newest first: who asked, what, when, how much (never the content)."""
    business_id = _business(who)
    async with ctx(request).db.sessions() as session:
        rows = await erasure.erasures_of(session, business_id, query.limit, query.before_id)
    return ErasureList(erasures=[_out(e) for e in rows])


@router.get("/account/export", responses={200: None}, content=NDJSON, errors=(403,),
            **BUSINESS)
async def account_export(request: Request, who: Client) -> StreamingResponse:
    """Every message of your chat sessions as JSON Lines (application/x-ndjson), streamed:
    one line per message, {session_id, job_id, role, message, context, timestamp}, by session
    then in the order they were written. `context` is the job's context on a user's message."""
    business_id = _business(who)
    return StreamingResponse(export_lines(ctx(request), business_id),
                             media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="export.jsonl"'})


async def export_lines(c: AppContext, business_id: int) -> AsyncIterator[bytes]:
    """The business's messages, EXPORT_PAGE at a time (keyset on (session_id, id): a page is
    one short read, whatever the total)."""
    after: tuple[str, int] | None = None
    while True:
        query = (select(ChatLog.id, ChatLog.session_id, ChatLog.job_id, ChatLog.role,
                        ChatLog.message, ChatLog.timestamp, ChatJob.context)
                 .outerjoin(ChatJob, and_(ChatJob.id == ChatLog.job_id, ChatLog.role == "user"))
                 .where(ChatLog.business_id == business_id))
        if after is not None:
            query = query.where(or_(ChatLog.session_id > after[0],
                                    and_(ChatLog.session_id == after[0], ChatLog.id > after[1])))
        async with c.db.reads() as session:
            rows = (await session.execute(query.order_by(ChatLog.session_id, ChatLog.id)
                                          .limit(EXPORT_PAGE))).all()
        if not rows:
            return
        yield b"".join(orjson.dumps({
            "session_id": r.session_id, "job_id": r.job_id, "role": r.role,
            "message": r.message, "context": r.context, "timestamp": r.timestamp,
        }) + b"\n" for r in rows)
        after = (rows[-1].session_id, rows[-1].id)


# ------------------------------------------------------------------ operators


def _business_id(request: Request) -> int | None:
    raw = request.path_params["business_id"]
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


@router.delete("/businesses/{business_id}", responses={200: BusinessRemoved},
               errors=(403, 404), **OPERATOR)
async def remove_business(request: Request, who: Wallet) -> BusinessRemoved:
    """Operator: remove a business. Its API keys are revoked (401 from now on), its jobs in
    flight cancelled (holds released), all its content erased (chat and idle prompts, answers,
    histories) and its contact email and phone cleared; its name, ledger, balance and deposits
    stay. Idempotent: calling again finishes an interrupted removal."""
    business_id = _business_id(request)
    if business_id is None:
        raise NotFound("no such business", code="business_not_found")
    c = ctx(request)
    removed = await erasure.remove_business(c, business_id, who.address)
    e = removed.erasure
    log.info("business %d removed by %s: %d key(s) revoked; erasure %d (%d jobs, %d messages, "
             "%d cancelled)", business_id, who.address, removed.keys_revoked, e.id, e.jobs,
             e.messages, e.cancelled)
    return BusinessRemoved(business_id=business_id, removed_at=removed.removed_at,
                           keys_revoked=removed.keys_revoked, erasure=_out(removed.erasure))


@router.get("/businesses/{business_id}/erasures", query=ErasuresQuery,
            responses={200: ErasureList}, errors=(403, 404), **OPERATOR)
async def business_erasures(request: Request, who: Wallet, query: ErasuresQuery) -> ErasureList:
    """Operator: a business's erasures, newest first."""
    business_id = _business_id(request)
    async with ctx(request).db.sessions() as session:
        if business_id is None or not await erasure.business_exists(session, business_id):
            raise NotFound("no such business", code="business_not_found")
        rows = await erasure.erasures_of(session, business_id, query.limit, query.before_id)
    return ErasureList(erasures=[_out(e) for e in rows])
