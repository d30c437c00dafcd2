"""Role guards used by routes: who may call what."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from app.auth import apikeys, sessions
from app.auth.principals import Client, Wallet
from app.auth.roles import suspended_error
from app.auth.secrets import bearer, hash_secret
from app.context import AppContext, ctx
from app.errors import Forbidden, Unauthorized
from app.models import utcnow
from app.ratelimit import limit_address, limit_anonymous_chat, limit_api_key

T = TypeVar("T")


def client_guard(scope: str, *, submits: bool = False) -> Callable[[Request], Awaitable[Client]]:
    """Endpoint guard: an API key with `scope` (anonymous callers too where allowed; only
    submissions count against the anonymous rate limit)."""

    async def guard(request: Request) -> Client:
        return await require_client(request, scope, submits=submits)
    return guard


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
        client: Client = await _identify(c, token, apikeys.authenticate)
        apikeys.require_scope(client, scope)
        await limit_api_key(c, client.api_key_id)
        return client
    if scope == "chat" and c.settings.chat_allow_anonymous:
        if submits:
            await limit_anonymous_chat(request)
        return Client(business_id=None, api_key_id=None, scopes=frozenset({"chat"}))
    raise Unauthorized("an API key is required: Authorization: Bearer <key>",
                       code="missing_api_key")


async def require_wallet(request: Request, role: str) -> Wallet:
    c = ctx(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("a session token is required: sign in with /auth/login",
                           code="missing_token")
    who, expires_at = await _identify(c, token, sessions.authenticate)
    sessions.check_expiry(expires_at, utcnow())
    await limit_address(c, who.address)
    if role not in who.roles:
        raise Forbidden(f"this session lacks the {role!r} role", code="insufficient_role")
    if role == "miner" and who.suspended:  # read with the token; a suspension clears the caches
        raise suspended_error()
    if role == "operator" and who.address.lower() not in c.settings.operators:
        # Removing an address from OPERATOR_ADDRESSES takes effect at once, not at token expiry.
        raise Forbidden("this wallet is no longer an operator", code="insufficient_role")
    return who


async def _identify(c: AppContext, secret: str,
                    authenticate: Callable[[AsyncSession, str], Awaitable[T]]) -> T:
    """Who a bearer secret stands for: remembered (app/auth/cache.py) or read by its hash."""
    secret_hash = hash_secret(secret)
    known: T | None = c.auth_cache.get(secret_hash)
    if known is None:
        async with c.db.reads() as session:
            known = await authenticate(session, secret_hash)
        c.auth_cache.put(secret_hash, known)
    return known
