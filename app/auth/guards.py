"""Role guards used by routes: who may call what."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request

from app.auth import apikeys, sessions
from app.auth.principals import Client, Wallet
from app.auth.secrets import bearer
from app.context import ctx
from app.errors import Forbidden, RateLimited, Unauthorized
from app.models import utcnow


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
        async with c.db.sessions() as session:
            key = await apikeys.authenticate(session, token, scope)
        return Client(business_id=key.business_id, api_key_id=key.id, scopes=key.scope_set)
    if scope == "chat" and c.settings.chat_allow_anonymous:
        if submits:
            await _anonymous_rate_limit(request)
        return Client(business_id=None, api_key_id=None, scopes=frozenset({"chat"}))
    raise Unauthorized("an API key is required: Authorization: Bearer <key>",
                       code="missing_api_key")


async def _anonymous_rate_limit(request: Request) -> None:
    c = ctx(request)
    client = request.client.host if request.client else "unknown"
    window = int(utcnow().timestamp()) // 60
    key = f"{c.settings.redis_prefix}:rl:anon:{client}:{window}"
    pipe = c.redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, 120)
    count, _ = await pipe.execute()
    if int(count) > c.settings.chat_anon_rate_per_min:
        retry = 60 - int(utcnow().timestamp()) % 60
        raise RateLimited("too many anonymous chats from this address; slow down",
                          retry_after_s=retry)


async def require_wallet(request: Request, role: str) -> Wallet:
    c = ctx(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("a session token is required: sign in with /auth/login",
                           code="missing_token")
    async with c.db.sessions() as session:
        who = await sessions.authenticate(session, token, utcnow())
    if role not in who.roles:
        raise Forbidden(f"this session lacks the {role!r} role", code="insufficient_role")
    if role == "operator" and who.address.lower() not in c.settings.operators:
        # Removing an address from OPERATOR_ADDRESSES takes effect at once, not at token expiry.
        raise Forbidden("this wallet is no longer an operator", code="insufficient_role")
    return who
