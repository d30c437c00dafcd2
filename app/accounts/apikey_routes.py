"""Operators manage business API keys. A key is shown once, in the creation response."""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response

from app.auth import cache as auth_cache
from app.accounts import keys
from app.auth import apikeys
from app.auth.guards import wallet_guard
from app.auth.principals import Wallet
from app.context import ctx
from app.errors import Conflict, NotFound
from app.models import ApiKey, Business, utcnow
from app.schemas import RequestBody, ResponseBody
from app.web import Router, json_response

log = logging.getLogger(__name__)
router = Router("api-keys")
OPERATOR = dict(auth=("MinerToken",), guard=wallet_guard("operator"))


class ApiKeyIn(RequestBody):
    business: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(default=["chat"], min_length=1, max_length=4,
                              description="any of: chat, idle")


class ApiKeyOut(ResponseBody):
    id: int
    business: str
    scopes: list[str]
    prefix: str = Field(description="the key's first characters, for telling keys apart")
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")


class ApiKeyList(ResponseBody):
    keys: list[ApiKeyOut]


def _out(key: ApiKey, business: str) -> ApiKeyOut:
    return ApiKeyOut(id=key.id, business=business, scopes=sorted(key.scope_set),
                     prefix=key.prefix, created_at=key.created_at, revoked_at=key.revoked_at)


@router.post("/api-keys", body=ApiKeyIn, responses={201: ApiKeyCreated}, errors=(403, 409),
             **OPERATOR)
async def create_key(request: Request, who: Wallet, body: ApiKeyIn) -> Response:
    """Operator: create a business API key (the business is created if new)."""
    for attempt in range(2):
        try:
            async with ctx(request).db.transaction() as session:
                key, plaintext = await keys.create_api_key(session, body.business, body.scopes)
            break
        except IntegrityError:
            # A concurrent request created the business first: once more finds it.
            if attempt:
                raise Conflict("concurrent changes to this business; retry",
                               code="api_key_conflict") from None
    log.info("API key %d (%s...) created for %r by %s", key.id, key.prefix, body.business,
             who.address)
    out = ApiKeyCreated(**_out(key, body.business).model_dump(), key=plaintext)
    return json_response(out, 201)


@router.get("/api-keys", responses={200: ApiKeyList}, errors=(403,), **OPERATOR)
async def list_keys(request: Request, who: Wallet) -> ApiKeyList:
    """Operator: every key, newest first, by prefix (keys are never shown again)."""
    async with ctx(request).db.sessions() as session:
        rows = await apikeys.list_keys(session)
    return ApiKeyList(keys=[_out(key, business) for key, business in rows])


@router.delete("/api-keys/{key_id}", responses={200: ApiKeyOut}, errors=(403, 404),
               **OPERATOR)
async def revoke_key(request: Request, who: Wallet) -> ApiKeyOut:
    """Operator: revoke a key; requests with it get 401 from now on. Idempotent."""
    raw = request.path_params["key_id"]
    key_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None
    async with ctx(request).db.transaction() as session:
        key = await apikeys.revoke(session, key_id, utcnow()) if key_id else None
        if key is None:
            raise NotFound("no such API key", code="api_key_not_found")
        business = (await session.execute(
            select(Business.name).where(Business.id == key.business_id)
        )).scalar_one()
    await auth_cache.announce_revocation(ctx(request))
    log.info("API key %d (%s...) revoked by %s", key.id, key.prefix, who.address)
    return _out(key, business)
