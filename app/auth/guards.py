"""Role guards used by routes: who may call what."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from app import observability
from app.auth import apikeys, sessions
from app.auth import cache as auth_cache
from app.auth.principals import Client, Wallet
from app.auth.roles import suspended_error
from app.auth.secrets import bearer, hash_secret
from app.context import AppContext, ctx
from app.errors import Forbidden, RateLimited, Unauthorized
from app.models import utcnow
from app.ratelimit import Rate, client_ip, limit_address, limit_anonymous_chat, limit_api_key

T = TypeVar("T")


def client_guard(scope: str, *, submits: bool = False) -> Callable[[Request], Awaitable[Client]]:
    """Endpoint guard: an API key with `scope` (anonymous callers too where allowed; only
    submissions count against the anonymous rate limit)."""

    async def guard(request: Request) -> Client:
        return await require_client(request, scope, submits=submits)
    return guard


async def any_key_guard(request: Request) -> Client:
    """Endpoint guard: a business API key of any scope (a business's own account pages)."""
    c = ctx(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("an API key is required: Authorization: Bearer <key>",
                           code="missing_api_key")
    client: Client = await _identify(request, "key", token, apikeys.authenticate)
    observability.set_fields(business_id=client.business_id)  # on this request's log lines
    await limit_api_key(c, client.api_key_id)
    return client


def wallet_guard(role: str) -> Callable[[Request], Awaitable[Wallet]]:
    async def guard(request: Request) -> Wallet:
        return await require_wallet(request, role)
    return guard


async def require_client(request: Request, scope: str, *, submits: bool = False) -> Client:
    """A business API key with `scope`, or (when allowed) an anonymous caller, rate-limited on
    submissions."""
    c = ctx(request)
    token = bearer(request.headers.get("authorization"))
    if token is not None:
        client: Client = await _identify(request, "key", token, apikeys.authenticate)
        observability.set_fields(business_id=client.business_id)  # on this request's log lines
        apikeys.require_scope(client, scope)
        await limit_api_key(c, client.api_key_id)
        return client
    if scope == "chat" and c.settings.chat_allow_anonymous:
        if submits:
            await limit_anonymous_chat(request)
        return Client(business_id=None, api_key_id=None, scopes=frozenset({"chat"}))
    raise Unauthorized("an API key is required: Authorization: Bearer <key>",
                       code="missing_api_key")


async def require_session(request: Request) -> Wallet:
    """A live session token of any role (rate-limited per wallet)."""
    c = ctx(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("a session token is required: sign in with /auth/login",
                           code="missing_token")
    who, expires_at = await _identify(request, "token", token, sessions.authenticate)
    observability.set_fields(miner=who.address)  # on this request's log lines
    sessions.check_expiry(expires_at, utcnow())
    await limit_address(c, who.address)
    return who


async def require_wallet(request: Request, role: str) -> Wallet:
    c = ctx(request)
    who = await require_session(request)
    if role not in who.roles:
        raise Forbidden(f"this session lacks the {role!r} role", code="insufficient_role")
    if role == "miner" and who.suspended:  # read with the token; a suspension clears the caches
        raise suspended_error()
    if role == "operator" and who.address.lower() not in c.settings.operators:
        # Removing an address from OPERATOR_ADDRESSES takes effect at once, not at token expiry.
        raise Forbidden("this wallet is no longer an operator", code="insufficient_role")
    return who


async def _identify(request: Request, kind: str, secret: str,
                    authenticate: Callable[[AsyncSession, str], Awaitable[T]]) -> T:
    """Who a bearer secret of `kind` ("key", "token") stands for: remembered
    (app/auth/cache.py) or read by its hash. A refused secret is remembered as refused, and
    counts against its client IP's budget of failed authentications."""
    c = ctx(request)
    secret_hash = hash_secret(secret)
    known: T | None = c.auth_cache.get(kind, secret_hash)
    if known is not None:
        if c.auth_cache.due:  # re-read in the background, never on this request's path
            auth_cache.refresh_soon(c)
        return known
    ip = client_ip(request)
    blocked_for = c.auth_cache.blocked_for(ip)
    if blocked_for > 0:  # this IP used up its failures: no database read, no Redis call
        raise _too_many_failures(blocked_for)
    refused = c.auth_cache.refusal(kind, secret_hash)
    if refused is None:
        generation = c.auth_cache.generation
        try:
            async with c.db.reads() as session:
                known = await authenticate(session, secret_hash)
        except Unauthorized as exc:
            refused = (exc.code, exc.detail)
            c.auth_cache.refuse(kind, secret_hash, *refused)
        else:
            if c.auth_cache.generation == generation:  # else a revocation came meanwhile
                c.auth_cache.put(kind, secret_hash, known)
            return known
    await _count_failure(c, ip)
    raise Unauthorized(refused[1], code=refused[0])


async def _count_failure(c: AppContext, ip: str) -> None:
    rate = Rate.per_minute(c.settings.rate_limit_auth_fail_per_min)
    decision = await c.limiter.hit("authfail", ip, rate)
    if not decision.allowed:
        c.auth_cache.block(ip, decision.retry_after_ms / 1000)
        raise _too_many_failures(decision.retry_after_ms / 1000)


def _too_many_failures(seconds: float) -> RateLimited:
    wait = max(1, math.ceil(seconds))
    return RateLimited(f"too many failed authentications from this address; retry after "
                       f"{wait} s", retry_after_s=wait)
